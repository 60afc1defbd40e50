"""Class names: which name belongs to which class index the model outputs."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mltool.errors import DataError


class Labels:
    """Index -> name. An index with no name prints as the index itself, never as a neighbour's name."""

    def __init__(self, names: dict[int, str]) -> None:
        self._names = dict(names)

    @classmethod
    def from_list(cls, names: Iterable[str]) -> Labels:
        return cls(dict(enumerate(names)))

    @classmethod
    def from_file(cls, path: str | Path) -> Labels:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"labels file {path} does not exist", "pass a text file with one class name per line")
        return cls.from_list(ln.strip() for ln in path.read_text().splitlines() if ln.strip())

    def name(self, index: int) -> str:
        return self._names.get(index, str(index))

    def index(self, name: str) -> int | None:
        return next((i for i, n in self._names.items() if n == name), None)

    @property
    def names(self) -> list[str]:
        """Names in index order (for listings)."""
        return [self._names[i] for i in sorted(self._names)]

    def __len__(self) -> int:
        return len(self._names)

    def __bool__(self) -> bool:
        return bool(self._names)
