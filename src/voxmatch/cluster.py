"""The connection to a Ray cluster, for the work one machine cannot do (docs/scale-out.md).

Imported only where a Ray address is configured: without one, nothing of Ray is imported or
started. Every function here talks to the cluster this process is connected to; `connect` is
idempotent, so the server, its task handlers and `voxmatch extract --ray` share one connection.

Nothing here waits long on a cluster that is not there. `ray.init` towards an address where
nothing listens retries for minutes, and `ray.nodes()` of a driver whose cluster went away
blocks: `connect` first opens a TCP connection to the head's port with a short timeout, and
`status` asks Ray only once that port answers, on a thread it waits for a bounded time. Once
the cluster is seen gone (`lost`), the next `connect` joins it afresh, so work may succeed
again when it is back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

NAMESPACE = "voxmatch"
"""Ray namespace of everything voxmatch starts, so that named actors of other applications on a
shared cluster are never mistaken for ours."""

CONNECT_TIMEOUT_SECONDS = 3.0
"""How long the head's port may take to accept a TCP connection before the cluster counts as
unreachable: a loaded head on a LAN answers in milliseconds."""

STATUS_TIMEOUT_SECONDS = 2.0
"""How long `status` waits for the cluster's list of nodes, so the status endpoint stays fast."""

_DRIVER_ENVIRONMENT = {
    # voxmatch runs offline and sends nothing anywhere.
    "RAY_USAGE_STATS_ENABLED": "0",
    # Bounds the first connection to the GCS once its port answers (Ray's default is longer).
    "RAY_gcs_rpc_server_connect_timeout_s": "5",
    # Ray terminates a driver whose GCS has been away this long (60 s by default): that driver
    # is the server. The server outlives its cluster; `lost` and `connect` reconnect instead.
    "RAY_gcs_rpc_server_reconnect_timeout_s": str(10 * 365 * 24 * 3600),
}
"""Set unless the user set them, before Ray is imported."""

_lock = threading.Lock()
_connected_to: str | None = None
_gcs_address: str | None = None
"""HOST:PORT of the connected cluster's GCS (what `auto` resolved to)."""
_stale = False
"""The connected cluster was seen gone: the next `connect` joins afresh."""
_nodes_query: threading.Thread | None = None


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
    address do nothing while it stays up). Raises ClusterUnreachable, within seconds, when no
    cluster answers there."""
    global _connected_to, _gcs_address, _stale
    with _lock:
        if _connected_to == address and not _stale:
            return
        for name, value in _DRIVER_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        import ray

        gcs_address = _resolve(address)
        _check_port(address, gcs_address)
        if ray.is_initialized():
            ray.shutdown()
        _connected_to = None
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
        _connected_to, _stale = address, False
        _gcs_address = ray.get_runtime_context().gcs_address


def lost(address: str) -> None:
    """Say the cluster at `address` went away (work on it failed for that): the next `connect`
    joins it afresh instead of trusting the old connection."""
    global _stale
    with _lock:
        if _connected_to == address:
            _stale = True


def answers(address: str) -> bool:
    """Whether the connected cluster's head still accepts connections (a quick TCP check)."""
    with _lock:
        gcs_address = _gcs_address if _connected_to == address else None
    try:
        _check_port(address, gcs_address)
    except ClusterUnreachable:
        return False
    return True


def status(address: str) -> ClusterStatus:
    """The cluster's live nodes and CPUs, or why it cannot be reached; within a few seconds."""
    try:
        connect(address)
        if not answers(address):
            lost(address)
            raise ClusterUnreachable(f"the Ray cluster at {address} went away")
        nodes = _alive_nodes(address)
    except ClusterUnreachable as error:
        return ClusterStatus(address, reachable=False, error=str(error))
    cpus = float(sum(node.get("Resources", {}).get("CPU", 0.0) for node in nodes))
    return ClusterStatus(address, reachable=True, nodes=len(nodes), cpus=cpus)


def _alive_nodes(address: str) -> list[dict[str, Any]]:
    """`ray.nodes()` of the live nodes, on a thread waited for `STATUS_TIMEOUT_SECONDS`: a
    query that does not answer is left to finish on its own, and no second one is started
    while it runs."""
    global _nodes_query
    import ray

    answer: list[list[dict[str, Any]]] = []
    failure: list[BaseException] = []

    def query() -> None:
        try:
            answer.append(ray.nodes())  # type: ignore[no-untyped-call]
        except Exception as error:  # noqa: BLE001 - Ray raises several kinds once the GCS is gone
            failure.append(error)

    with _lock:
        if _nodes_query is not None and _nodes_query.is_alive():
            raise ClusterUnreachable(f"the Ray cluster at {address} does not answer")
        _nodes_query = threading.Thread(target=query, name="ray-nodes", daemon=True)
        _nodes_query.start()
        running = _nodes_query
    running.join(STATUS_TIMEOUT_SECONDS)
    if running.is_alive():
        raise ClusterUnreachable(f"the Ray cluster at {address} does not answer")
    if failure or not answer:
        lost(address)
        kind = type(failure[0]).__name__ if failure else "no answer"
        raise ClusterUnreachable(f"the Ray cluster at {address} went away ({kind})")
    return [node for node in answer[0] if node.get("Alive")]


def _resolve(address: str) -> str | None:
    """HOST:PORT of the head, or None when Ray alone can tell (`auto` with no cluster known
    to this machine: ray.init then says so)."""
    if address != "auto":
        return address
    from ray._private.services import canonicalize_bootstrap_address

    try:
        return canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError):
        return None


def _check_port(address: str, gcs_address: str | None) -> None:
    if gcs_address is None:
        return
    host, _, port = gcs_address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnreachable(f"not a Ray address (HOST:PORT or auto): {address}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_SECONDS):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ClusterUnreachable(f"no Ray cluster answers at {address} ({reason})") from None
