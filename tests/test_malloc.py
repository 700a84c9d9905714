"""voxmatch._malloc: freed memory kept for reuse, big blocks and trims given back.

Each check runs in a fresh interpreter: the settings are process-wide and must not touch the
test process.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

_PROGRAM = """
import sys
import numpy as np
from voxmatch._malloc import release_freed_memory, retain_freed_memory

def resident_mib():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmRSS:"))
    return int(line.split()[1]) // 1024

assert retain_freed_memory()
start = resident_mib()
# 200 MiB in blocks of 8 MiB: heap blocks, kept once freed.
blocks = [np.ones(1 << 20) for _ in range(25)]
del blocks
kept = resident_mib() - start
release_freed_memory()
released = resident_mib() - start
# One block of 400 MiB: mapped on its own, returned at free.
big = np.ones(50 << 20)
del big
after_big = resident_mib() - start
print(kept, released, after_big)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc are Linux's")
def test_freed_memory_is_kept_until_released_and_big_blocks_go_back_at_once() -> None:
    output = subprocess.run(
        [sys.executable, "-c", _PROGRAM], capture_output=True, text=True, check=True
    ).stdout
    kept, released, after_big = map(int, output.split())
    assert kept > 150, "freed heap blocks stay resident for the next request"
    assert released < 50, "release_freed_memory hands them back"
    assert after_big < 50, "a block of 256 MiB or more goes back when freed"
