"""Class names: which name belongs to which class index the model outputs.

Label files come in several formats, all read here:

- one name per line (line N is class N), as Keras and most classifiers ship them;
- ``ID name``, ``ID: name`` or ``ID,name`` per line, where the ID is what the model outputs and
  IDs may skip numbers (TensorFlow Lite and Coral detection models: COCO IDs have gaps).

A UTF-8 BOM, CRLF line ends, trailing whitespace, blank lines and a missing final newline are
all fine. An index with no name prints as the index itself, never as a neighbour's name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from mltool.errors import DataError

_ID_LINE = re.compile(r"^(\d+)(?:\s*[:,]\s*|\s+)(\S.*?)\s*$")


def parse_labels(text: str, source: str = "labels") -> dict[int, str]:
    """Index -> name from the text of a label file in any of the formats above."""
    lines = [ln.strip() for ln in text.lstrip("\ufeff").splitlines()]
    lines = [ln for ln in lines if ln]
    matches = [_ID_LINE.match(ln) for ln in lines]
    if lines and all(matches):
        names: dict[int, str] = {}
        for m in matches:
            i, name = int(m.group(1)), m.group(2)  # type: ignore[union-attr]
            if i in names and names[i] != name:
                raise DataError(f"{source} gives class {i} two names ('{names[i]}' and '{name}')",
                                "keep one line per class id")
            names[i] = name
        return names
    return dict(enumerate(lines))


class Labels:
    """Index -> name. An index with no name prints as the index itself."""

    def __init__(self, names: dict[int, str]) -> None:
        self._names = dict(names)

    @classmethod
    def from_list(cls, names: Iterable[str]) -> Labels:
        return cls(dict(enumerate(names)))

    @classmethod
    def from_text(cls, text: str, source: str = "labels") -> Labels:
        return cls(parse_labels(text, source))

    @classmethod
    def from_file(cls, path: str | Path) -> Labels:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"labels file {path} does not exist", "pass a text file with one class name per line")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"labels file {path} is not UTF-8 text (byte {exc.start})",
                            "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
        except OSError as exc:
            raise DataError(f"cannot read labels file {path} ({exc.strerror or exc})", "check its permissions") from None
        return cls.from_text(text, str(path))

    def name(self, index: int) -> str:
        return self._names.get(index, str(index))

    def index(self, name: str) -> int | None:
        return next((i for i, n in self._names.items() if n == name), None)

    @property
    def ids(self) -> list[int]:
        return sorted(self._names)

    @property
    def names(self) -> list[str]:
        """Names in index order (for listings)."""
        return [self._names[i] for i in sorted(self._names)]

    @property
    def max_id(self) -> int:
        return max(self._names, default=-1)

    def __len__(self) -> int:
        return len(self._names)

    def __bool__(self) -> bool:
        return bool(self._names)
