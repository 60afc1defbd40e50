"""The on-disk outbox: every message is a row before it is published, and is deleted only once
the broker has acknowledged it. SQLite in WAL mode, standard library only.

Why it looks like this:

* ``put`` is the only outbox work on the inference path, and one result's messages are a single
  INSERT statement: triggers replace keyed rows and persist counters inside it, so the inference
  thread releases the GIL (to the publisher's threads) once per write, not once per bookkeeping
  step. ``synchronous=NORMAL``: no fsync, yet the row survives ``kill -9`` as soon as ``put``
  returns. The publisher thread checkpoints (fsyncs) about once a second, so a power cut can cost
  at most the last second of results, and inference never waits on the SD card.
* Row ids never repeat (AUTOINCREMENT), so "everything after the last row handed to the client"
  is the backlog, oldest first, then live messages.
* Bounded by rows and bytes: the oldest rows not yet handed to the client are dropped first and
  counted (``dropped`` survives restarts). Rows with a ``key`` (the retained state, discovery
  configs) replace their unsent predecessor instead of queueing behind it.
* Counters (message sequence numbers, event numbers; at most two per row) are columns of the row
  that carries them, and move to the ``meta`` table in the statement that deletes the row (a
  trigger, on the publisher's thread): a number is always in the file, so none is reused after
  a crash, and the inference path never writes the ``meta`` page.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mltool.errors import ConfigError, DataError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,
    qos INTEGER NOT NULL, retain INTEGER NOT NULL, key TEXT, size INTEGER NOT NULL, created REAL NOT NULL,
    c1 TEXT, v1 INTEGER, c2 TEXT, v2 INTEGER);
CREATE INDEX IF NOT EXISTS outbox_key ON outbox(key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS outbox_keyed AFTER INSERT ON outbox WHEN NEW.key IS NOT NULL BEGIN
    DELETE FROM outbox WHERE key = NEW.key AND id < NEW.id; END;
CREATE TRIGGER IF NOT EXISTS outbox_counters AFTER DELETE ON outbox WHEN OLD.c1 IS NOT NULL BEGIN
    INSERT INTO meta (name, value) VALUES (OLD.c1, OLD.v1)
    ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value);
    INSERT INTO meta (name, value) SELECT OLD.c2, OLD.v2 WHERE OLD.c2 IS NOT NULL
    ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value); END;
"""
_INSERT = "INSERT INTO outbox (topic, payload, qos, retain, key, size, created, c1, v1, c2, v2) VALUES "
_VALUES = "(?,?,?,?,?,?,?,?,?,?,?)"


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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lockfile = _lock(self.path)
        except OSError as exc:
            raise DataError(f"cannot create the MQTT outbox {self.path}: {exc.strerror}", _open_hint(exc)) from None
        self._lock = threading.RLock()
        self.handed = 0  # rows with id <= handed are with the MQTT client: never dropped
        self.last_id = 0  # the newest row written (the publisher fetches only when it moved)
        self._keyed: dict[str, tuple[int, int]] = {}  # key -> (row id, size) of its latest row
        self._depth = 0  # batch() nesting
        self._pending: list[tuple] = []  # puts of the current batch
        self._batch = _Batch(self)
        self._unsaved = False  # counters/dropped advanced by writes that failed, not yet in the file
        self.lost = 0  # messages that could not be written (disk full, read-only): counted in dropped
        try:
            self._db = self._connect()
            self._db.executescript(_SCHEMA)
            self._rd = self._connect()
            check = [r[0] for r in self._db.execute("PRAGMA quick_check(3)").fetchall()]
            if check != ["ok"]:
                raise sqlite3.DatabaseError(f"damaged ({'; '.join(check)})")
            self._db.execute("BEGIN IMMEDIATE")  # can we write? (read-only file system, full disk)
            self._db.execute("ROLLBACK")
            self._reload()
        except sqlite3.DatabaseError as exc:
            for db in (getattr(self, "_rd", None), getattr(self, "_db", None)):
                if db is not None:
                    db.close()
            self._unlock()
            raise DataError(f"MQTT outbox {self.path} cannot be used: {exc}", _open_hint(exc)) from None
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
        for name, value in db.execute("SELECT c1, MAX(v1) FROM outbox WHERE c1 IS NOT NULL GROUP BY c1 UNION ALL "
                                      "SELECT c2, MAX(v2) FROM outbox WHERE c2 IS NOT NULL GROUP BY c2"):
            self._counters[name] = max(value, self._counters.get(name, 0))
        self._keyed = {key: (rid, size) for key, rid, size in
                       db.execute("SELECT key, id, size FROM outbox WHERE key IS NOT NULL ORDER BY id")}

    # ------------------------------------------------------------------ writing (any thread)
    def batch(self) -> _Batch:
        """Every ``put`` inside is written by one statement when the batch ends (nothing, if
        nothing was put): one result's event and state messages are one write. Re-entrant."""
        return self._batch

    def put(self, topic: str, payload: bytes | Callable[[dict[str, int]], bytes], *, qos: int = 1,
            retain: bool = False, key: str | None = None, counters: Iterable[str] = ()) -> dict[str, int]:
        """Store one message. ``counters`` (at most two) are advanced with it; a callable
        ``payload`` receives their new values (so a sequence number is part of the message it
        numbers)."""
        with self._batch:
            values = {c: self._counters.get(c, 0) + 1 for c in counters}
            data = payload(values) if callable(payload) else payload
            self._counters.update(values)
            self._pending.append((topic, data, qos, retain, key, len(data) + len(topic), values))
            return values

    def _flush(self) -> None:
        pending, db = self._pending, self._db
        fits = [p for p in pending if p[5] <= self.max_bytes]  # larger than the whole bound: dropped
        gone = {p[4]: self._keyed[p[4]][1] for p in fits if p[4] in self._keyed}  # replaced by the trigger
        rows = self.rows + len(fits) - len(gone)
        size = self.bytes + sum(p[5] for p in fits) - sum(gone.values())
        params: list[object] = []
        now = time.time()
        for topic, data, qos, retain, key, n, values in fits:
            (c1, v1), (c2, v2) = (list(values.items()) + [(None, None)] * 2)[:2]
            params += [topic, data, qos, int(retain), key, n, now, c1, v1, c2, v2]
        sql = _INSERT + ",".join([_VALUES] * len(fits))
        if len(fits) == len(pending) and rows <= self.max_rows and size <= self.max_bytes and not self._unsaved:
            last = db.execute(sql, params).lastrowid  # the fast path: one statement, its own transaction
        else:
            db.execute("BEGIN IMMEDIATE")
            try:
                keep = {self._keyed[k][0] for k in gone}  # replaced by the insert's trigger anyway
                dropped = len(pending) - len(fits) + self._make_room(rows - self.rows, size - self.bytes, keep)
                for p in pending:
                    if p[5] > self.max_bytes:  # never written, but its numbers stay used
                        for c in p[6]:
                            self._set(c, self._counters[c])
                if self._unsaved:  # numbers handed to messages that were never written: never reuse them
                    for name, value in list(self._counters.items()):
                        self._set(name, value)
                self._set("dropped", self.dropped + dropped)
                last = db.execute(sql, params).lastrowid if fits else self.last_id
                db.execute("COMMIT")
                self._unsaved = False
            except BaseException:
                db.execute("ROLLBACK")
                raise
        rid = last - len(fits)
        for topic, data, qos, retain, key, n, values in fits:
            rid += 1
            if key is not None:
                old = self._keyed.get(key)
                if old is not None:
                    self.rows, self.bytes = self.rows - 1, self.bytes - old[1]
                self._keyed[key] = (rid, n)
            self.rows += 1
            self.bytes += n
        self.last_id = last
        self.dirty = True

    def _lose(self, n: int) -> None:
        """``n`` messages of a batch could not be written (a full or read-only disk): they count as
        dropped, and their numbers stay used (receivers see the gap), in memory until a later
        write can record them."""
        counters = dict(self._counters)
        try:
            self._reload()  # the mirror (rows, bytes, keyed rows) as the file has it
        except sqlite3.Error:
            pass
        for name, value in counters.items():
            self._counters[name] = max(value, self._counters.get(name, 0))
        self._counters["dropped"] = self._counters.get("dropped", 0) + n
        self.lost += n
        self._unsaved = True

    def _set(self, name: str, value: int) -> None:
        self._db.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                         (name, value))
        self._counters[name] = value

    def _make_room(self, add_rows: int, add_bytes: int, keep: set[int]) -> int:
        """Delete the oldest rows not yet handed to the client (nor in ``keep``) until
        ``add_rows`` more rows of ``add_bytes`` fit; returns how many were deleted."""
        dropped = 0
        while self.rows + add_rows > self.max_rows or self.bytes + add_bytes > self.max_bytes:
            over_rows = max(self.rows + add_rows - self.max_rows, 0)
            batch = [(rid, s) for rid, s in self._db.execute(
                "SELECT id, size FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (self.handed, max(over_rows, 16) + len(keep))) if rid not in keep]
            if not batch:
                break  # everything left is in flight: allow the overshoot (at most one window)
            take, freed = [], 0
            for rid, s in batch:
                take.append(rid)
                freed += s
                if self.rows - len(take) + add_rows <= self.max_rows and self.bytes - freed + add_bytes <= self.max_bytes:
                    break
            self._db.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(take))})", take)
            self._forget(set(take))
            self.rows -= len(take)
            self.bytes -= freed
            dropped += len(take)
        return dropped

    def _forget(self, ids: set[int]) -> None:
        for key in [k for k, (rid, _) in self._keyed.items() if rid in ids]:
            del self._keyed[key]

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
                self._forget(set(ids))

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
            if self._unsaved:  # a last try to record the dropped count and the numbers used
                try:
                    with self._db:
                        for name, value in list(self._counters.items()):
                            self._set(name, value)
                    self._unsaved = False
                except sqlite3.Error:
                    pass
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


class _Batch:
    """``with outbox.batch():`` (a plain class: this is on the inference path)."""

    def __init__(self, box: Outbox) -> None:
        self.box = box

    def __enter__(self) -> None:
        box = self.box
        box._lock.acquire()
        box._depth += 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        box = self.box
        try:
            if box._depth == 1:
                if exc_type is not None:
                    if box._pending:
                        box._lose(len(box._pending))
                elif box._pending:
                    try:
                        box._flush()
                    except BaseException:
                        box._lose(len(box._pending))
                        raise
        finally:
            box._depth -= 1
            if box._depth == 0:
                box._pending = []
            box._lock.release()


def read_counter(path: str | Path, name: str) -> int:
    """The last number ``name`` has handed out in the outbox at ``path``, read-only (another
    process may be writing it): for tools and tests."""
    if not Path(path).exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT MAX(v) FROM (SELECT value AS v FROM meta WHERE name = ?1 UNION ALL "
                         "SELECT v1 FROM outbox WHERE c1 = ?1 UNION ALL SELECT v2 FROM outbox WHERE c2 = ?1)",
                         (name,)).fetchone()
    except sqlite3.OperationalError:  # not created yet
        row = None
    finally:
        db.close()
    return (row[0] or 0) if row else 0


def _lock(path: Path) -> int | None:
    """One process per outbox: two publishers of the same rows would send everything twice, and
    two writers through different names of one file (a hard link) would corrupt each other's
    WAL. So the lock is on the database file itself (flock: independent of SQLite's own
    fcntl locks), not on a name beside it."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no guard
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(f"MQTT outbox {path} is in use by another mltool process",
                          "give this one its own --mqtt-device or --mqtt-outbox") from None
    return fd


def _open_hint(exc: BaseException) -> str:
    """What to do about an outbox that cannot be opened, by cause: only a damaged file is worth
    moving away (and losing its unsent messages)."""
    import errno

    name = getattr(exc, "sqlite_errorname", "")
    code = getattr(exc, "errno", None)
    if name == "SQLITE_FULL" or code == errno.ENOSPC or "disk is full" in str(exc):
        return "free space on that file system and start again (the outbox keeps its unsent messages)"
    if name.startswith("SQLITE_READONLY") or code in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly" in str(exc):
        return "pass a file on a writable file system to --mqtt-outbox (the one given cannot be written)"
    if code == errno.EISDIR:
        return "pass a file, not a directory, to --mqtt-outbox"
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_IOERR")):
        return "check the file system the outbox is on (mount, permissions, space), or pass another --mqtt-outbox"
    return "move the file away (its unsent messages are lost) or pass another --mqtt-outbox"
