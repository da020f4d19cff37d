"""The SQLite store: what it keeps, how it compacts, and every bad file it refuses."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from agentsync import Node
from agentsync.crdt import ORMap, ORSet
from agentsync.crdt.codec import encode
from agentsync.store import Store, StoreError, StoreLockedError
from agentsync.store.sqlite import APPLICATION_ID, DB_FILE, PAGE_SIZE, SCHEMA_VERSION
from agentsync.sync.pruning import Pruning


def sql(data_dir: Path, statement: str, *params: object) -> object:
    """Run one statement on the store's file behind its back, committed; its first value."""
    db = sqlite3.connect(data_dir / DB_FILE)
    try:
        row = db.execute(statement, params).fetchone()
        db.commit()
        return row[0] if row else None
    finally:
        db.close()


def writes(state: ORMap, items: range) -> list[ORMap]:
    return [state.update("tasks", ORSet, lambda s, i=i: s.add(f"t{i}")) for i in items]


def filled(path: Path, count: int = 20) -> ORMap:
    """A closed store in ``path`` with ``count`` logged writes; the state they make."""
    store = Store(path)
    assert store.load() is None
    store.save_identity("n1", "blue", "n1.abc")
    state = ORMap("n1.abc")
    for delta in writes(state, range(count)):
        store.append(delta)
    store.save_members(
        [("http://10.0.0.2:7000", "n2", "mdns"), ("http://10.0.0.1:7000", None, "seed")]
    )
    store.close()
    return state


def test_a_store_gives_back_the_identity_state_and_members_it_was_given(tmp_path: Path) -> None:
    state = filled(tmp_path)
    store = Store(tmp_path)
    stored = store.load()
    assert stored is not None
    assert (stored.node_id, stored.cluster, stored.replica_id) == ("n1", "blue", "n1.abc")
    assert stored.state == state and stored.state.replica_id == "n1.abc"
    assert stored.members == [
        ("http://10.0.0.2:7000", "n2", "mdns"), ("http://10.0.0.1:7000", None, "seed")
    ]  # fmt: skip
    assert stored.clean  # the last process closed it
    store._db.close()  # as a crash would leave it: open, never closed
    store._lock_file.close()
    again = Store(tmp_path)
    loaded = again.load()
    assert loaded is not None and not loaded.clean
    assert again.integrity() == "ok"
    again.close()  # a reader of a crashed store leaves it unclean for the next opener
    third = Store(tmp_path)
    after_reader = third.load()
    assert after_reader is not None and not after_reader.clean
    third.save_identity("n1", "blue", "n1.new")  # a new incarnation: clean from now on
    third.close()
    fourth = Store(tmp_path)
    resumed = fourth.load()
    assert resumed is not None and resumed.clean and resumed.replica_id == "n1.new"
    fourth.close()


def test_logging_several_deltas_is_one_commit_of_all_of_them(tmp_path: Path) -> None:
    store = Store(tmp_path, durability="normal")
    store.load()
    store.save_identity("n1", "blue", "n1.abc")
    state = ORMap("n1.abc")
    store.log([encode(delta) for delta in writes(state, range(100))])
    with pytest.raises(StoreError):  # the second row breaks a constraint: neither is kept
        store.log([encode(state), None])  # type: ignore[list-item]
    store.close()
    reopened = Store(tmp_path)
    stored = reopened.load()
    assert stored is not None and stored.state == state  # the refused commit left nothing
    reopened.close()


def test_compaction_folds_the_log_into_a_snapshot_and_keeps_later_writes(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.load()
    store.save_identity("n1", "blue", "n1.abc")
    state = ORMap("n1.abc")
    for delta in writes(state, range(300)):
        store.append(delta)
    assert store.wants_compaction(1000)
    assert not store.wants_compaction(10**9)  # below the floor: not yet
    begun = store.begin_compaction(state)
    assert begun is not None
    assert store.begin_compaction(state) is None  # one at a time
    assert not store.wants_compaction(1000)
    for delta in writes(state, range(300, 310)):  # written while the snapshot is written
        store.append(delta)
    store.finish_compaction(*begun)
    assert not store.wants_compaction(1000)  # the log is ten entries now
    store.close()
    assert sql(tmp_path, "SELECT count(*) FROM log") == 10
    reopened = Store(tmp_path)
    stored = reopened.load()
    assert stored is not None and stored.state == state
    reopened.close()


def test_a_second_opener_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first = Store(tmp_path)
    with pytest.raises(StoreLockedError, match="another process uses the data directory"):
        Store(tmp_path)
    first.close()
    first.close()  # idempotent
    Store(tmp_path).close()


def test_a_bad_durability_is_refused() -> None:
    with pytest.raises(ValueError, match="durability"):
        Store("unused", durability="sometimes")  # type: ignore[arg-type]


def refused(path: Path, *fragments: str) -> None:
    """Opening ``path`` raises a StoreError naming the file and saying ``fragments``."""
    for _ in range(2):  # twice: a refusal leaves no lock behind once closed
        store = None
        with pytest.raises(StoreError) as caught:
            store = Store(path)  # refuses what it can tell at once
            store.load()  # and the rest as it reads
        if store is not None:
            store.close()
        assert not isinstance(caught.value, StoreLockedError)
        message = str(caught.value)
        assert "locked" not in message, message  # the first refusal's connection was closed
        assert str(path / DB_FILE) in message, message
        for fragment in fragments:
            assert fragment in message, message


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match=f"cannot use {blocker}"):
        Store(blocker)


def test_a_file_that_is_not_sqlite_is_refused_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"hello world" * 1000)
    refused(tmp_path, "is not a SQLite database", "Move it away")


def test_a_sqlite_file_of_another_program_is_refused(tmp_path: Path) -> None:
    sql(tmp_path, "CREATE TABLE notes (text)")
    refused(tmp_path, "another program")


def test_a_store_from_a_newer_agentsync_is_refused(tmp_path: Path) -> None:
    filled(tmp_path)
    sql(tmp_path, f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    refused(tmp_path, "newer agentsync")


def test_a_truncated_store_is_refused(tmp_path: Path) -> None:
    filled(tmp_path, count=400)
    path = tmp_path / DB_FILE
    data = path.read_bytes()
    assert len(data) > 8192
    path.write_bytes(data[: len(data) // 2])
    refused(tmp_path, "Move it away")


def test_a_corrupt_page_is_refused(tmp_path: Path) -> None:
    filled(tmp_path, count=400)
    path = tmp_path / DB_FILE
    data = bytearray(path.read_bytes())
    page = 4096
    data[2 * page : 3 * page] = os.urandom(page)  # a b-tree page of garbage
    path.write_bytes(bytes(data))
    refused(tmp_path)


def test_an_entry_that_does_not_decode_is_refused_by_name(tmp_path: Path) -> None:
    filled(tmp_path, count=3)
    sql(tmp_path, "INSERT INTO log (delta) VALUES (?)", b"\x93garbage")
    refused(tmp_path, "log entry 4", "does not decode")


def test_a_store_without_its_identity_is_refused(tmp_path: Path) -> None:
    filled(tmp_path)
    sql(tmp_path, "DELETE FROM meta WHERE key = 'replica_id'")
    refused(tmp_path, "identity")


def test_the_application_id_marks_the_file_as_ours(tmp_path: Path) -> None:
    Store(tmp_path).close()
    assert sql(tmp_path, "PRAGMA application_id") == APPLICATION_ID
    assert sql(tmp_path, "PRAGMA journal_mode") == "wal"


def test_a_new_store_has_small_pages_and_an_older_one_keeps_its_own(tmp_path: Path) -> None:
    new = tmp_path / "new"
    state = filled(new)
    assert sql(new, "PRAGMA page_size") == PAGE_SIZE == 1024
    old = tmp_path / "old"
    old.mkdir()
    db = sqlite3.connect(old / DB_FILE)  # a file as agentsync made it before: 4 KiB pages
    db.execute("PRAGMA page_size=4096")
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    assert filled(old) == state  # opened, written, closed and read back as before
    assert sql(old, "PRAGMA page_size") == 4096
    store = Store(old)
    stored = store.load()
    store.close()
    assert stored is not None and stored.state == state


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_store_is_upgraded_in_place_and_resumes(tmp_path: Path, version: int) -> None:
    state = filled(tmp_path)
    sql(tmp_path, "DROP TABLE session")  # as agentsync made it before schema 3
    if version == 1:
        sql(tmp_path, "DROP TABLE pruning")  # and before schema 2
    sql(tmp_path, f"PRAGMA user_version={version}")
    store = Store(tmp_path)
    stored = store.load()
    assert stored is not None and stored.state == state and stored.pruning is None
    store.save_pruning(Pruning().save())
    store.save_session(b"kept")
    store.close()
    assert sql(tmp_path, "PRAGMA user_version") == SCHEMA_VERSION == 3
    node = Node(data_dir=tmp_path, cluster="blue")  # the node resumes from it
    try:
        assert node.node_id == "n1" and node.set("tasks").value == state["tasks"].value
    finally:
        asyncio.run(node.stop())


def test_a_session_comes_back_once_and_only_after_a_clean_stop(tmp_path: Path) -> None:
    filled(tmp_path)
    store = Store(tmp_path)
    store.load()
    store.save_session(b"session one")
    store.close()
    store = Store(tmp_path)
    stored = store.load()
    assert stored is not None and stored.session == b"session one"
    store.close()  # clean, but this run saved no session: the one it resumed is gone
    store = Store(tmp_path)
    stored = store.load()
    assert stored is not None and stored.session is None
    store.save_session(b"session two")
    store._db.close()  # a crash: no clean close
    store._lock_file.close()
    store = Store(tmp_path)
    stored = store.load()
    assert stored is not None and not stored.clean and stored.session is None
    store.close()


def test_the_pruning_state_is_kept_and_a_corrupt_one_refused_by_name(tmp_path: Path) -> None:
    filled(tmp_path)
    pruning = Pruning()
    pruning.forgot("gone.1", 7)
    store = Store(tmp_path)
    store.load()
    store.save_pruning(pruning.save())
    store.close()
    store = Store(tmp_path)
    stored = store.load()
    store.close()
    assert stored is not None and stored.pruning is not None
    assert stored.pruning.pruned == {"gone.1": 7}
    sql(tmp_path, "UPDATE pruning SET state = ?", b"\x94garbage")
    refused(tmp_path, "pruning state", "does not decode", "Move it away")


def test_a_reset_replaces_state_and_log_and_drops_a_compaction_under_way(tmp_path: Path) -> None:
    old = filled(tmp_path)
    store = Store(tmp_path)
    store.load()
    begun = store.begin_compaction(old)
    assert begun is not None
    fresh = ORMap("n1.new")
    store.reset("n1.new", fresh)
    store.finish_compaction(*begun)  # stale: it would bring the old replica back
    for delta in writes(fresh, range(2)):
        store.append(delta)
    store.close()
    store = Store(tmp_path)
    stored = store.load()
    store.close()
    assert stored is not None and stored.replica_id == "n1.new" and stored.clean
    assert stored.state == fresh and "n1.abc" not in stored.state.replica_ids()
