"""A real Ray cluster of several nodes on this machine, on loopback only, for the scale-out tests.

Ray binds to the machine's network address unless `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` is in the
environment of every Ray process (the cluster's and the drivers'); with it, every node and
every driver uses 127.0.0.1. `cluster_utils.Cluster` starts a head and added nodes (each a raylet
of its own, so `remove_node` kills one as a machine failure would) in a few seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from voxmatch.cluster import LOOPBACK_ONLY_ENVIRONMENT

if TYPE_CHECKING:
    from ray.cluster_utils import Cluster

LOOPBACK_RAY_ENVIRONMENT = LOOPBACK_ONLY_ENVIRONMENT
"""For this process and for every server or CLI a test starts against the cluster."""


@contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: int = 1) -> Iterator[Cluster]:
    """A head node and `nodes - 1` more, `cpus_per_node` CPUs each; shut down on exit.
    `cluster.address` is what `ray_address` takes."""
    os.environ.update(LOOPBACK_RAY_ENVIRONMENT)
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": cpus_per_node, "include_dashboard": False},
    )
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=cpus_per_node)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()  # type: ignore[no-untyped-call]


def assert_clear_cluster_failure(message: str, address: str) -> None:
    """A task's error when its cluster went away: names the cluster, in words, with no
    traceback and no path of the server's."""
    assert address in message, message
    assert "Ray cluster" in message, message
    assert "Traceback" not in message
    assert "/" not in message.replace(address, ""), message
