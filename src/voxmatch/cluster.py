"""The connection to a Ray cluster, for the work one machine cannot do (docs/scale-out.md).

Imported only where a Ray address is configured: without one, nothing of Ray is imported or
started. Every function here talks to the cluster this process is connected to; `connect` is
idempotent, so the server, its task handlers and `voxmatch extract --ray` share one connection.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

NAMESPACE = "voxmatch"
"""Ray namespace of everything voxmatch starts, so that named actors of other applications on a
shared cluster are never mistaken for ours."""

_QUIET_ENVIRONMENT = {"RAY_USAGE_STATS_ENABLED": "0"}
"""Set unless the user set them: voxmatch runs offline and sends nothing anywhere."""

_lock = threading.Lock()
_connected_to: str | None = None


class ClusterUnreachable(RuntimeError):
    """The cluster cannot be reached (never could, or went away): work for it fails cleanly."""


@dataclass(frozen=True)
class ClusterStatus:
    """What `/api/system/status` says of the cluster."""

    address: str
    reachable: bool
    nodes: int = 0
    cpus: float = 0.0
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "address": self.address,
            "reachable": self.reachable,
            "nodes": self.nodes,
            "cpus": self.cpus,
        }
        if self.error is not None:
            described["error"] = self.error
        return described


def connect(address: str) -> None:
    """Join the cluster at `address` as a driver (once per process; later calls with the same
    address do nothing). Raises ClusterUnreachable when no cluster answers there."""
    global _connected_to
    with _lock:
        if _connected_to == address:
            return
        for name, value in _QUIET_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        import ray

        if ray.is_initialized():
            ray.shutdown()
        try:
            ray.init(
                address=address,
                namespace=NAMESPACE,
                logging_level=logging.WARNING,
                log_to_driver=False,
                include_dashboard=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ClusterUnreachable(f"no Ray cluster answers at {address}: {error}") from None
        _connected_to = address


def status(address: str) -> ClusterStatus:
    """The cluster's live nodes and CPUs, or why it cannot be reached."""
    try:
        connect(address)
        import ray

        nodes = [node for node in ray.nodes() if node.get("Alive")]  # type: ignore[no-untyped-call]
        cpus = float(sum(node.get("Resources", {}).get("CPU", 0.0) for node in nodes))
    except ClusterUnreachable as error:
        return ClusterStatus(address, reachable=False, error=str(error))
    except Exception as error:  # noqa: BLE001 - Ray raises several kinds once the GCS is gone
        return ClusterStatus(address, reachable=False, error=f"the cluster went away: {error}")
    return ClusterStatus(address, reachable=True, nodes=len(nodes), cpus=cpus)
