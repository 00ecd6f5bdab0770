"""The Ray cluster of `--engine ray`: joined or started without hanging, and asked before scheduling
whether it can hold an actor at all.

Ray retries an unreachable address for minutes, and waits forever for actors that need resources no
node has; here an address is tried for at most 5 s, a cluster ens started is asked at once whether a
node can hold an actor, and a cluster it joined is given at most 10 minutes to make room for one.
Each failure is one line saying what was tried and for how long.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import warnings
from typing import TYPE_CHECKING

from ensemble.errors import EnsError

if TYPE_CHECKING:
    from ensemble.runs.resumable import RunOptions

CONNECT_TIMEOUT_S = 5.0
ACTOR_WAIT_S = 600.0
ADDRESS_HINT = (
    "check --ray-address (e.g. ray://head:10001, head:6379 or auto), or leave it out to start a local one"
)


def connect(ray, options: RunOptions) -> None:
    """Join --ray-address, or start a local cluster; a session already started is used as is."""
    if ray.is_initialized():
        return
    address = options.ray_address
    if address:
        check_reachable(address, _bootstrap_address(address))
    handlers = _stop_handlers()
    try:
        with warnings.catch_warnings():  # Ray Client warns before it raises; the error line says it all
            warnings.simplefilter("ignore")
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"the cluster at {address!r}" if address else "a local Ray cluster"
        raise EnsError(f"cannot connect to {where} ({exc}); {ADDRESS_HINT}") from exc
    finally:
        _restore(handlers)


def _bootstrap_address(address: str) -> str | None:
    """host:port that `address` leads to (`auto` read from RAY_ADDRESS or the last `ray start`), or
    None when there is nothing to check beforehand (`local`, an address Ray itself will reject)."""
    if address == "local":
        return None
    if address.startswith("ray://"):
        return address.removeprefix("ray://").split("/")[0]
    if address == "auto":
        try:
            from ray._private.services import get_ray_address_from_environment

            return get_ray_address_from_environment("auto", None)
        except Exception:  # Ray's own ray.init reports a missing cluster in one line
            return None
    return address


def check_reachable(address: str, bootstrap: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A TCP connection to the head's host:port, at most `timeout` s, before ray.init (which retries
    an unreachable address for minutes)."""
    host, _, port = (bootstrap or "").rpartition(":")
    if not host or not port.isdigit():
        return
    host = host.strip("[]")
    start = time.monotonic()
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        took = time.monotonic() - start
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc)).lower()
        raise EnsError(
            f"cannot reach the Ray cluster at {address!r}: a TCP connection to {host}:{port} "
            f"failed after {took:.1f} s ({reason}; the limit is {timeout:g} s); {ADDRESS_HINT}"
        ) from exc


def make_room(ray, gpus: float, workers: int, address: str | None) -> None:
    """Make sure an actor (1 CPU and `gpus` GPUs) can start before the pool is scheduled. A cluster
    ens started never grows: refuse at once when no node can hold one. A cluster it joined may be busy
    or still scaling up: wait for room for one actor, at most ACTOR_WAIT_S."""
    if address:
        wait_for_room(ray, gpus, address)
    else:
        check_fits(ray, gpus, workers)


def check_fits(ray, gpus: float, workers: int) -> None:
    """Refuse at once when no node of the cluster could ever hold one actor (1 CPU and `gpus` GPUs):
    Ray would wait for it forever. A cluster that lists no node is left to Ray."""
    nodes = _node_resources(ray)
    if not nodes or any(node.get("CPU", 0) >= 1 and node.get("GPU", 0) >= gpus for node in nodes):
        return
    raise EnsError(
        f"--gpus-per-worker {gpus:g}: no node of the Ray cluster can hold one of the {workers} actor(s), "
        f"which need 1 CPU and {gpus:g} GPU(s) each (checked {len(nodes)} node(s) at once: "
        f"{_largest(nodes)}); lower --gpus-per-worker (0 runs on CPU), or leave it out (1 when the "
        "cluster has GPUs, else 0)"
    )


def wait_for_room(ray, gpus: float, address: str, timeout: float = ACTOR_WAIT_S) -> None:
    """Start one placeholder actor with an actor's resources and wait at most `timeout` s for it."""
    start = time.monotonic()
    probe = ray.remote(num_cpus=1, num_gpus=gpus)(_Placeholder).remote()
    try:
        ray.get(probe.ready.remote(), timeout=timeout)
    except ray.exceptions.GetTimeoutError as exc:
        nodes = _node_resources(ray)
        raise EnsError(
            f"no node of the Ray cluster at {address!r} had room for an actor (1 CPU and {gpus:g} GPU(s)) "
            f"within {time.monotonic() - start:.0f} s (the limit): its {len(nodes)} node(s) have "
            f"{_largest(nodes)}; lower --gpus-per-worker, or free or add nodes"
        ) from exc
    finally:
        ray.kill(probe)


class _Placeholder:
    """An actor that only tells it has started."""

    def ready(self) -> bool:
        return True


def _node_resources(ray) -> list[dict]:
    return [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]


def _largest(nodes: list[dict]) -> str:
    most_gpus = max((node.get("GPU", 0) for node in nodes), default=0)
    most_cpus = max((node.get("CPU", 0) for node in nodes), default=0)
    return f"at most {most_gpus:g} GPU(s) and {most_cpus:g} CPU(s) on one"


def _stop_handlers() -> dict:
    """The Python handlers of the stop signals, when this is the main thread (else none)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    return {sig: signal.getsignal(sig) for sig in (getattr(signal, n) for n in names if hasattr(signal, n))}


def _restore(handlers: dict) -> None:
    """Ray's core installs its own SIGTERM handler (which aborts); put ens's back, so a stop
    signal still ends the run in one line with its complete shards kept."""
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)
