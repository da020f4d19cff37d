"""A node's durable state: one SQLite database (WAL) in its data directory.

What is kept: the node's identity (node id, cluster, replica id), its
replicas as a snapshot plus a log of the deltas applied since, its
members, and its pruning state (``SyncEngine.pruning``). Every write is
one transaction, so a crash leaves the state from before it or after it,
never a mix; ``durability`` says what a commit
survives (``"full"``: power loss, as every commit is fsynced; ``"normal"``:
a process crash, while the last commits may be lost to a power cut).
Compaction writes a new snapshot and drops the log it covers, off the
writer's thread, so start-up reads O(state), not O(history).

Every file in the directory is outside input: a foreign, truncated or
corrupt one raises ``StoreError`` naming the file and what to do, and a
second process that opens the directory is refused while the first holds
its lock.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Literal

from agentsync.crdt import ORMap
from agentsync.crdt.codec import decode, encode
from agentsync.errors import AgentsyncError, DecodeError
from agentsync.sync.pruning import Pruning

Durability = Literal["full", "normal"]
DURABILITIES: tuple[Durability, ...] = ("full", "normal")
DB_FILE = "agentsync.db"
LOCK_FILE = "agentsync.lock"
APPLICATION_ID = 0x41475359
"""``PRAGMA application_id`` of an agentsync store ("AGSY"): tells it from other SQLite files."""
SCHEMA_VERSION = 3
"""1: identity, snapshot, log, members. 2 adds the pruning table, 3 the sync session (an
older file is migrated in place when it is opened)."""
BUSY_TIMEOUT_S = 30.0
"""How long a statement waits for a lock held by another connection (there should be none)."""
PAGE_SIZE = 1024
"""The page size of a new file (an older file keeps its own). A commit writes each page it
changed whole to the WAL, and the log's commits change one page (a row of a few dozen
bytes): a page of 1 KiB, not SQLite's 4 KiB, makes each commit write and checksum a
quarter of the bytes, which takes about a third off a NORMAL commit (docs/performance.md,
"Durable writes"). SQLite's checkpoint every 1,000 pages stays: the WAL then wraps at
1 MiB, and while it grows (after each open) a FULL commit's fsync also writes the file's
new size: checkpointing every 4,096 pages made the first 3,000 FULL commits of a new
file slower (210 against 150 µs each here)."""

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL,
                       state BLOB NOT NULL);
CREATE TABLE log (seq INTEGER PRIMARY KEY, delta BLOB NOT NULL);
CREATE TABLE members (url TEXT PRIMARY KEY, node_id TEXT, source TEXT NOT NULL);
"""
_SCHEMA_2 = "CREATE TABLE pruning (id INTEGER PRIMARY KEY CHECK (id = 1), state BLOB NOT NULL);"
_SCHEMA_3 = "CREATE TABLE session (id INTEGER PRIMARY KEY CHECK (id = 1), state BLOB NOT NULL);"
_IDENTITY = ("node_id", "cluster", "replica_id")
_INSERT = "INSERT INTO log (delta) VALUES (?)"


class StoreError(AgentsyncError):
    """The data directory cannot be used; the message names the file and what to do."""


class StoreLockedError(StoreError):
    """Another process holds the data directory."""


@dataclass(frozen=True, slots=True)
class Stored:
    """What a store held when it was opened."""

    node_id: str
    cluster: str
    replica_id: str
    state: ORMap
    """The snapshot with the log replayed onto it, owned by ``replica_id``."""
    members: list[tuple[str, str | None, str]]
    """(url, node_id, source) of every member, in the order they were saved."""
    clean: bool
    """Whether the last process closed the store (False after a crash)."""
    pruning: Pruning | None = None
    """The pruning state last saved (its config the default one), or None if none was."""
    session: bytes | None = None
    """The sync session (``agentsync.sync.session``) saved at the last stop, if that stop
    was clean: only then does it match the state. Taken out of the file as it is read."""
    limited: bool = False
    """A peer limited what this node, an observer, reads: its state must never be a writer's."""


class Store:
    """One open data directory. Thread-safe: calls are serialized by a lock."""

    def __init__(self, data_dir: str | os.PathLike[str], *, durability: Durability = "full"):
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
        self.data_dir = os.fspath(data_dir)
        self.path = os.path.join(self.data_dir, DB_FILE)
        self.durability: Durability = durability
        self._lock = threading.RLock()
        self._log_bytes = 0
        self._snapshot_bytes = 0
        self._compacting = False
        self._reset = False
        """A reset came while a compaction was under way: that compaction's snapshot is stale."""
        self._clean = False
        """Whether closing may mark the store clean: its replica id issued nothing lost."""
        try:
            os.makedirs(self.data_dir, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot use {self.data_dir}: {exc.strerror or exc}") from exc
        self._lock_file = _take_lock(os.path.join(self.data_dir, LOCK_FILE))
        try:
            self._db = self._connect()
            self._cursor = self._db.cursor()
            try:
                self._prepare()
            except BaseException:
                self._db.close()  # it holds the file: exclusive locking
                raise
        except BaseException:
            self._lock_file.close()
            raise

    # -- opening ----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = None
        try:
            db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            # The directory's lock keeps every other process out, so the one
            # connection may hold the file for good: no shared-memory index
            # to lock and unlock around each commit.
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL fixes it; a new file's
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.durability.upper()}")
        except sqlite3.DatabaseError as exc:
            if db is not None:  # else it holds the file, exclusively, while the error lives
                db.close()
            raise self._bad(f"is not a SQLite database ({exc})") from None
        return db

    def _prepare(self) -> None:
        """Create the schema in a new file; check a known one is ours, whole and current."""
        db = self._db
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise self._bad(f"is not a readable SQLite database ({exc})") from None
        if tables == 0 and app_id == 0:
            db.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} {_SCHEMA_2} {_SCHEMA_3}"
                f" PRAGMA application_id={APPLICATION_ID};"
                f" PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )
            return
        if app_id != APPLICATION_ID:
            raise self._bad("is a SQLite database of another program, not an agentsync store")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer agentsync (schema {version}; this one "
                f"reads {SCHEMA_VERSION}): upgrade agentsync"
            )
        if not 1 <= version <= SCHEMA_VERSION:
            raise self._bad(f"has an unknown schema version {version}")
        try:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            check = str(exc)
        if check != "ok":
            raise self._bad(f"is corrupt ({check})")
        if version < SCHEMA_VERSION:  # an older agentsync's file: add what it lacks
            added = (_SCHEMA_2, _SCHEMA_3)[version - 1 :]
            try:
                db.executescript(
                    f"BEGIN IMMEDIATE; {' '.join(added)} PRAGMA user_version={SCHEMA_VERSION};"
                    " COMMIT;"
                )
            except sqlite3.Error as exc:
                raise StoreError(
                    f"cannot upgrade {self.path} to schema {SCHEMA_VERSION}: {exc}"
                ) from exc

    def _bad(self, what: str) -> StoreError:
        return StoreError(
            f"{self.path} {what}. Move it away to start this node empty (it then catches "
            "up from its peers), or point data_dir at another directory."
        )

    # -- reading ----------------------------------------------------------------

    def load(self) -> Stored | None:
        """The stored node, or None if the store is new (nothing was ever saved)."""
        with self._lock:
            try:
                meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
                if not meta:
                    return None
                if any(key not in meta for key in _IDENTITY):
                    raise self._bad("lacks the node's identity")
                snapshot = self._db.execute("SELECT seq, state FROM snapshot").fetchone()
                rows = self._db.execute("SELECT seq, delta FROM log ORDER BY seq")
                state = ORMap(meta["replica_id"])
                if snapshot is not None:
                    self._snapshot_bytes = len(snapshot[1])
                    state.merge(self._decode(snapshot[1], "the snapshot"))
                self._log_bytes = 0
                for seq, blob in rows:
                    self._log_bytes += len(blob)
                    state.merge(self._decode(blob, f"log entry {seq}"))
                members = self._db.execute(
                    "SELECT url, node_id, source FROM members ORDER BY rowid"
                ).fetchall()
                pruning = self._pruning()
                session = self._db.execute("SELECT state FROM session").fetchone()
                with self._transaction():  # running now: a crash leaves it unclean
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES ('clean', '0')")
                    self._db.execute("DELETE FROM session")  # this run moves its epoch on
                self._clean = meta.get("clean") == "1"  # a crashed one stays so until saved anew
            except sqlite3.DatabaseError as exc:
                raise self._bad(f"cannot be read ({exc})") from None
            except (TypeError, ValueError) as exc:  # a merge refused what the file holds
                raise self._bad(f"holds a state that does not merge ({exc})") from None
        return Stored(
            node_id=meta["node_id"],
            cluster=meta["cluster"],
            replica_id=meta["replica_id"],
            state=state,
            members=[(url, node_id, source) for url, node_id, source in members],
            clean=meta.get("clean") == "1",
            pruning=pruning,
            session=session[0] if session and meta.get("clean") == "1" else None,
            limited=meta.get("limited") == "1",
        )

    def _pruning(self) -> Pruning | None:
        row = self._db.execute("SELECT state FROM pruning").fetchone()
        if row is None:
            return None
        if not isinstance(row[0], bytes):
            raise self._bad("holds a pruning state that is not bytes")
        pruning = Pruning()
        try:
            pruning.load(row[0])
        except DecodeError as exc:
            raise self._bad(f"holds a pruning state that does not decode ({exc})") from None
        return pruning

    def _decode(self, blob: object, what: str) -> ORMap:
        if not isinstance(blob, bytes):
            raise self._bad(f"holds {what} that is not bytes")
        try:
            return decode(blob, ORMap)
        except DecodeError as exc:
            raise self._bad(f"holds {what} that does not decode ({exc})") from None

    # -- writing ----------------------------------------------------------------

    def save_identity(self, node_id: str, cluster: str, replica_id: str) -> None:
        """Record who this node is: a new node, or a new incarnation after a crash."""
        self._clean = True
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("node_id", node_id), ("cluster", cluster), ("replica_id", replica_id),
                 ("clean", "0")],
            )  # fmt: skip

    def mark_limited(self) -> None:
        """Record for good that a peer limits what this observer reads (``Stored.limited``)."""
        with self._lock, self._transaction():
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('limited', '1')")

    def append(self, delta: ORMap) -> None:
        """Log a delta applied to the state; durable when this returns."""
        self._insert(encode(delta))

    def _insert(self, blob: bytes) -> None:
        """Log one encoded delta: one statement, its own transaction (the hot case)."""
        with self._lock:
            try:
                self._cursor.execute(_INSERT, (blob,))  # a kept cursor: none made per write
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write {self.path}: {exc}") from exc
            self._log_bytes += len(blob)

    def log(self, blobs: Sequence[bytes]) -> None:
        """Log encoded deltas in one transaction: all of them are durable when this returns."""
        if len(blobs) == 1:
            self._insert(blobs[0])
            return
        with self._lock:
            with self._transaction():
                self._db.executemany(_INSERT, ((blob,) for blob in blobs))
            self._log_bytes += sum(map(len, blobs))

    def save_session(self, blob: bytes) -> None:
        """Keep the sync session for the next start; call it as the node stops cleanly."""
        self._keep("session", blob)

    def save_pruning(self, blob: bytes) -> None:
        """Keep the pruning state (``Pruning.save()``), replacing the one kept before."""
        self._keep("pruning", blob)

    def _keep(self, table: Literal["session", "pruning"], blob: bytes) -> None:
        """Replace the one blob a single-row table holds."""
        with self._lock, self._transaction():
            self._db.execute(f"INSERT OR REPLACE INTO {table} (id, state) VALUES (1, ?)", (blob,))

    def reset(self, replica_id: str, state: ORMap) -> None:
        """Start anew as ``replica_id`` from ``state``: a pruned replica's new incarnation.

        The snapshot becomes ``state`` and the log goes, in one transaction, so
        that a restart never brings the pruned replica back; a compaction
        under way is dropped (its snapshot holds the old replica).
        """
        blob = encode(state)
        with self._lock:
            with self._transaction():
                db = self._db
                db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                               [("replica_id", replica_id), ("clean", "0")])  # fmt: skip
                db.execute("INSERT OR REPLACE INTO snapshot (id, seq, state) VALUES (1, 0, ?)",
                           (blob,))  # fmt: skip
                db.execute("DELETE FROM log")
            self._reset = self._compacting
            self._clean = True
            self._log_bytes = 0
            self._snapshot_bytes = len(blob)

    def save_members(self, members: list[tuple[str, str | None, str]]) -> None:
        """Replace the saved members: (url, node_id, source), in the order to try them."""
        with self._lock, self._transaction():
            self._db.execute("DELETE FROM members")
            self._db.executemany(
                "INSERT OR REPLACE INTO members (url, node_id, source) VALUES (?, ?, ?)", members
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (under ``_lock``); StoreError if it cannot commit."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {self.path}: {exc}") from exc

    # -- compaction ---------------------------------------------------------------

    def wants_compaction(self, min_bytes: int) -> bool:
        """Whether the log outgrew ``min_bytes`` and the snapshot: time to fold it in."""
        return not self._compacting and self._log_bytes > max(min_bytes, self._snapshot_bytes)

    def begin_compaction(self, state: ORMap) -> tuple[int, ORMap] | None:
        """Under the caller's lock: a copy of ``state`` and the log seq it covers.

        Returns None if a compaction is under way. Pass the result to
        ``finish_compaction``, off the caller's lock (another thread may).
        A copy costs a small part of an encode (6 ms against 109 ms for
        100,000 set elements), so writes wait only for the copy.
        """
        with self._lock:
            if self._compacting:
                return None
            row = self._db.execute("SELECT max(seq) FROM log").fetchone()
            snapshot = state.copy()
            self._compacting = True
        return (row[0] or 0), snapshot

    def finish_compaction(self, seq: int, snapshot: ORMap) -> None:
        """Encode the snapshot, write it and drop the log it covers, in one short transaction.

        Off the caller's lock (a worker thread may call it): the encode takes
        no lock, and writes wait only for the transaction, on the store's lock.
        """
        try:
            blob = encode(snapshot)
            with self._lock:
                if self._reset:  # the state it holds was dropped meanwhile
                    return
                with self._transaction():
                    db = self._db
                    db.execute("INSERT OR REPLACE INTO snapshot (id, seq, state) VALUES (1, ?, ?)",
                               (seq, blob))  # fmt: skip
                    dropped = db.execute(
                        "SELECT coalesce(sum(length(delta)), 0) FROM log WHERE seq <= ?", (seq,)
                    ).fetchone()[0]
                    db.execute("DELETE FROM log WHERE seq <= ?", (seq,))
                self._log_bytes -= dropped
                self._snapshot_bytes = len(blob)
        finally:
            with self._lock:
                self._compacting = self._reset = False

    # -- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Close the store and release the directory, marking it clean if it was.

        A store opened after a crash stays unclean until ``save_identity``
        records a new replica id: whoever opens it next must not write on
        under the crashed process's id.
        """
        with self._lock:
            if self._lock_file.closed:
                return
            try:
                if self._clean:
                    with contextlib.suppress(StoreError), self._transaction():
                        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('clean', '1')")
                self._db.close()
            finally:
                self._lock_file.close()

    def integrity(self) -> str:
        """``PRAGMA integrity_check``'s first line: ``ok`` for a sound file."""
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])


def _take_lock(path: str) -> IO[bytes]:
    """Hold ``path`` locked for as long as the file stays open; StoreLockedError if taken."""
    try:
        handle = open(path, "a+b")  # noqa: SIM115  # held open as the lock
    except OSError as exc:
        raise StoreError(f"cannot open the lock file {path}: {exc}") from exc
    try:
        if sys.platform == "win32":  # pragma: no cover  # lock the first byte instead
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StoreLockedError(
            f"another process uses the data directory {os.path.dirname(path)} (it holds "
            f"{path}); stop it, or give this node a data_dir of its own"
        ) from None
    return handle
