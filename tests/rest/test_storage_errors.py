"""A full disk while a task is accepted is a 507, not a 500."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from voxmatch.rest.errors import ApiError
from voxmatch.rest.tasks import storage_errors


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        sqlite3.OperationalError("database or disk is full"),
    ],
)
def test_full_storage_is_507(failure: Exception) -> None:
    with pytest.raises(ApiError) as answer, storage_errors():
        raise failure
    assert answer.value.status == 507
    assert answer.value.error_type == "storage.capacity-exceeded"


def test_the_message_names_no_server_file() -> None:
    with pytest.raises(ApiError) as answer, storage_errors():
        raise OSError(errno.ENOSPC, "No space left on device", "/srv/voxmatch-data/staging/x.part")
    assert answer.value.detail[0]["message"] == "No space left on device"


def test_other_errors_pass_through() -> None:
    with pytest.raises(PermissionError), storage_errors():
        raise PermissionError(errno.EACCES, "denied")
