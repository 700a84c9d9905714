"""Task owners in the store, and databases made before tasks had owners."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

from voxmatch.tasks import TaskStore

SCHEMA_BEFORE_OWNERS = """
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    params TEXT NOT NULL,
    result TEXT,
    error TEXT,
    request_id TEXT,
    correlation_id TEXT
);
"""


def test_the_owner_is_stored_with_the_task(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    owned = store.create("comparison", {}, task_id="t1", owner="alice")
    anonymous = store.create("comparison", {}, task_id="t2")
    assert owned.owner == "alice"
    assert anonymous.owner is None
    store.close()
    reopened = TaskStore(tmp_path)
    assert {record.id: record.owner for record in reopened.unfinished()} == {
        "t1": "alice",
        "t2": None,
    }


def test_a_database_without_the_owner_column_opens_and_gains_it(tmp_path: Path) -> None:
    database = sqlite3.connect(tmp_path / "tasks.sqlite3")
    database.executescript(SCHEMA_BEFORE_OWNERS)
    database.execute(
        "INSERT INTO tasks (id, kind, state, created, updated, params) VALUES (?, ?, ?, ?, ?, ?)",
        ("old", "comparison", "pending", 1.0, 1.0, json.dumps({"rows": "b"})),
    )
    database.commit()
    database.close()

    store = TaskStore(tmp_path)
    old = store.get("old")
    assert old is not None
    assert (old.owner, old.params) == (None, {"rows": "b"})
    new = store.create("comparison", {}, task_id="new", arrays={"a": np.zeros(3)}, owner="bob")
    assert new.owner == "bob"
    assert [record.id for record in store.unfinished()] == ["old", "new"]
    store.close()
    TaskStore(tmp_path).close()  # and it opens again once migrated
