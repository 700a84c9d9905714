"""The connection to a Ray cluster, for the work one machine cannot do (docs/scale-out.md).

Imported only where a Ray address is configured: without one, nothing of Ray is imported or
started. Every function here talks to the cluster this process is connected to; `connect` is
idempotent, so the server, its task handlers and `voxmatch extract --ray` share one connection.

Nothing here waits long on a cluster that is not there. `ray.init` towards an address where
nothing listens retries for minutes, and `ray.nodes()` of a driver whose cluster went away
blocks: `connect` first opens a TCP connection to the head's port with a short timeout, and
`status` asks the cluster's GCS only once that port answers, with a deadline. Once the cluster
is seen gone, the next `connect` joins it afresh, so work may succeed again when it is back.

A driver whose local raylet died terminates its own process at its next use of the object
store: a process that must outlive its cluster (the server) does not `connect`; it runs its
Ray work in a child process (see voxmatch.ray_comparison) and asks `status`.
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

LOOPBACK_ONLY_ENVIRONMENT = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}
"""With these in the environment of every Ray process (the cluster's and voxmatch's), Ray uses
127.0.0.1 for everything instead of the machine's network address: a cluster of one machine
for trying voxmatch out, the tests and the benchmarks (docs/scale-out.md)."""

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
_ALIVE = 0
"""`GcsNodeInfo.state` of a live node (Ray's protobuf enum)."""


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
    """Join the cluster at `address` as a driver (once per process: later calls with the same
    address do nothing while its head answers, and join afresh once it went away). Raises
    ClusterUnreachable, within seconds, when no cluster answers there."""
    global _connected_to, _gcs_address
    with _lock:
        if _connected_to == address and _head_answers(address, _gcs_address):
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
        _connected_to = address
        _gcs_address = ray.get_runtime_context().gcs_address


def answers(address: str) -> bool:
    """Whether the connected cluster's head still accepts connections (a quick TCP check)."""
    with _lock:
        gcs_address = _gcs_address if _connected_to == address else None
    return _head_answers(address, gcs_address)


def _head_answers(address: str, gcs_address: str | None) -> bool:
    try:
        _check_port(address, gcs_address)
    except ClusterUnreachable:
        return False
    return True


def status(address: str) -> ClusterStatus:
    """The cluster's live nodes and CPUs, or why it cannot be reached; within a few seconds.

    Asks the cluster's GCS directly, as `ray status` does, without joining as a driver: the
    server stays out of the cluster, and a cluster gone away costs it one refused connection.
    """
    for name, value in _DRIVER_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    from ray._raylet import GcsClient  # type: ignore[attr-defined]
    from ray.exceptions import RpcError

    try:
        gcs_address = _resolve(address)
        if gcs_address is None:
            raise ClusterUnreachable(f"no Ray cluster is known to this machine ({address})")
        _check_port(address, gcs_address)
        try:
            nodes = GcsClient(address=gcs_address).get_all_node_info(timeout=STATUS_TIMEOUT_SECONDS)
        except (RpcError, ConnectionError) as error:
            raise ClusterUnreachable(
                f"the Ray cluster at {address} does not answer ({type(error).__name__})"
            ) from None
    except ClusterUnreachable as error:
        return ClusterStatus(address, reachable=False, error=str(error))
    alive = [node for node in nodes.values() if node.state == _ALIVE]
    cpus = float(sum(node.resources_total.get("CPU", 0.0) for node in alive))
    return ClusterStatus(address, reachable=True, nodes=len(alive), cpus=cpus)


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
