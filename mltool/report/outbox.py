"""The on-disk outbox: every message is a row before it is published, and is deleted only once
the broker has acknowledged it. SQLite in WAL mode, standard library only.

Why it looks like this:

* ``put`` is the only outbox work on the inference path: one small transaction (an INSERT, and
  a counter UPDATE) with ``synchronous=NORMAL`` (no fsync; the row survives ``kill -9`` as soon as
  ``put`` returns). The publisher thread checkpoints (fsyncs) about once a second, so a power cut
  can cost at most the last second of results, and inference never waits on the SD card.
* Row ids never repeat (AUTOINCREMENT), so "everything after the last row handed to the client"
  is the backlog, oldest first, then live messages.
* Bounded by rows and bytes: the oldest rows not yet handed to the client are dropped first and
  counted (``dropped`` survives restarts). Rows with a ``key`` (the retained state, discovery
  configs) replace their unsent predecessor instead of queueing behind it.
* Counters (message sequence numbers, event numbers) live in the same file and advance in the
  same transaction as the row that carries them: no gaps, no reuse after a crash.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mltool.errors import ConfigError, DataError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,
    qos INTEGER NOT NULL, retain INTEGER NOT NULL, key TEXT, size INTEGER NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_key ON outbox(key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass
class Row:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Outbox:
    """``put`` from any thread; ``fetch``/``ack``/``checkpoint`` from the publisher thread."""

    def __init__(self, path: str | Path, *, max_rows: int = 100_000, max_bytes: int = 100 * 1024 * 1024) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lockfile = _lock(self.path)
        self._lock = threading.RLock()
        self.handed = 0  # rows with id <= handed are with the MQTT client: never dropped
        self.last_id = 0  # the newest row written (the publisher fetches only when it moved)
        self._keyed: dict[str, tuple[int, int]] = {}  # key -> (row id, size) of its latest row
        self._depth = 0  # batch() nesting
        self._tx = False  # a transaction is open in the current batch
        try:
            self._db = self._connect()
            self._db.executescript(_SCHEMA)
            self._rd = self._connect()
            self._reload()
        except sqlite3.DatabaseError as exc:
            self._unlock()
            raise DataError(f"MQTT outbox {self.path} cannot be used: {exc}",
                            "move the file away (its unsent messages are lost) or pass another --mqtt-outbox") from None
        self.dirty = False

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")  # the publisher thread checkpoints, not put()
        return db

    def _reload(self) -> None:
        """The in-memory mirror (row count, bytes, counters, keyed rows) from the file."""
        db = self._db
        self.rows, self.bytes, self.last_id = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(id), 0) FROM outbox").fetchone()
        self._counters = dict(db.execute("SELECT name, value FROM meta").fetchall())
        self._keyed = {key: (rid, size) for key, rid, size in
                       db.execute("SELECT key, id, size FROM outbox WHERE key IS NOT NULL ORDER BY id")}

    # ------------------------------------------------------------------ writing (any thread)
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Every ``put`` inside shares one transaction (opened by the first put, so an empty
        batch costs nothing): one result's event and state messages are one commit."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._depth = 1
            try:
                yield
                if self._tx:
                    self._db.execute("COMMIT")
                    self.dirty = True
            except BaseException:
                if self._tx:
                    self._db.execute("ROLLBACK")
                    self._reload()
                raise
            finally:
                self._depth, self._tx = 0, False

    def put(self, topic: str, payload: bytes | Callable[[dict[str, int]], bytes], *, qos: int = 1,
            retain: bool = False, key: str | None = None, counters: Iterable[str] = ()) -> dict[str, int]:
        """Store one message. ``counters`` are advanced with it; a callable ``payload`` receives
        their new values (so a sequence number is part of the message it numbers)."""
        with self.batch():
            values = {c: self._counters.get(c, 0) + 1 for c in counters}
            data = payload(values) if callable(payload) else payload
            size = len(data) + len(topic)
            db = self._db
            if not self._tx:
                db.execute("BEGIN IMMEDIATE")
                self._tx = True
            if size > self.max_bytes:
                self._set("dropped", self.dropped + 1)
                return values
            if key is not None and key in self._keyed:
                old_id, old_size = self._keyed.pop(key)
                if db.execute("DELETE FROM outbox WHERE id = ?", (old_id,)).rowcount:
                    self.rows, self.bytes = self.rows - 1, self.bytes - old_size
            dropped = self._make_room(size)
            rid = db.execute("INSERT INTO outbox (topic, payload, qos, retain, key, size, created) VALUES (?,?,?,?,?,?,?)",
                             (topic, data, qos, int(retain), key, size, time.time())).lastrowid
            for c, v in values.items():
                self._set(c, v)
            if dropped:
                self._set("dropped", self.dropped + dropped)
            self.rows += 1
            self.bytes += size
            self.last_id = rid
            if key is not None:
                self._keyed[key] = (rid, size)
            return values

    def _set(self, name: str, value: int) -> None:
        self._db.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                         (name, value))
        self._counters[name] = value

    def _make_room(self, size: int) -> int:
        """Delete the oldest rows not yet handed to the client until one more row of ``size`` fits."""
        dropped = 0
        while self.rows + 1 > self.max_rows or self.bytes + size > self.max_bytes:
            over_rows = max(self.rows + 1 - self.max_rows, 0)
            batch = self._db.execute("SELECT id, size FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                                     (self.handed, max(over_rows, 16))).fetchall()
            if not batch:
                break  # everything left is in flight: allow the overshoot (at most one window)
            take, freed = [], 0
            for rid, s in batch:
                take.append(rid)
                freed += s
                if self.rows - len(take) + 1 <= self.max_rows and self.bytes - freed + size <= self.max_bytes:
                    break
            self._db.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(take))})", take)
            self.rows -= len(take)
            self.bytes -= freed
            dropped += len(take)
        return dropped

    # ------------------------------------------------------------------ publishing (publisher thread)
    def fetch(self, after: int, limit: int) -> list[Row]:
        rows = self._rd.execute("SELECT id, topic, payload, qos, retain FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                                (after, limit)).fetchall()
        return [Row(r[0], r[1], bytes(r[2]), r[3], bool(r[4])) for r in rows]

    def ack(self, ids: list[int]) -> None:
        """The broker has them: delete (ids already gone, e.g. a replaced state, are ignored)."""
        if not ids:
            return
        with self._lock:
            marks = ",".join("?" * len(ids))
            n, b = self._db.execute(f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox WHERE id IN ({marks})", ids).fetchone()
            if n:
                self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", ids)
                self.rows, self.bytes = self.rows - n, self.bytes - b

    def checkpoint(self) -> None:
        """Make what ``put`` wrote durable (fsync) without holding up writers."""
        if self.dirty:
            self.dirty = False
            self._rd.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # ------------------------------------------------------------------ state
    @property
    def dropped(self) -> int:
        return self._counters.get("dropped", 0)

    def counter(self, name: str) -> int:
        return self._counters.get(name, 0)

    def stats(self) -> dict[str, int]:
        return {"pending": self.rows, "pending_bytes": self.bytes, "dropped": self.dropped}

    def close(self) -> None:
        with self._lock:
            for db in (self._rd, self._db):
                try:
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    db.close()
                except sqlite3.Error:
                    pass
        self._unlock()

    def _unlock(self) -> None:
        if self._lockfile is not None:
            os.close(self._lockfile)
            self._lockfile = None


def _lock(path: Path) -> int | None:
    """One process per outbox: two publishers of the same rows would send everything twice."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no guard
        return None
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(f"MQTT outbox {path} is in use by another mltool process",
                          "give this one its own --mqtt-device or --mqtt-outbox") from None
    return fd
