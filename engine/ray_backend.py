"""Running a job's inputs on Ray Data: connect to (or start) Ray, map batches on an actor pool.

The driver passes paths only (``ray.data.from_items``); each actor of the pool builds the task
once (:class:`~samkit.engine.worker.ImageWorker`), decodes, runs, writes outputs and returns
small manifest rows, which stream back to the driver through ``iter_rows``.

Fault tolerance (:class:`RetryPolicy`): a worker process that dies is restarted
(``max_restarts``) and its in-flight batch is retried (``max_task_retries``); a batch that still
fails counts against ``max_errored_blocks`` (the job goes on while at most that many fail; their
inputs become error rows in the manifest, and a rerun retries them).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import socket
import warnings
from typing import Any, Iterator, Mapping, Sequence

from .errors import EngineError
from .worker import ImageWorker

__all__ = ["RetryPolicy", "import_ray", "ray_cluster", "ray_rows"]

logger = logging.getLogger(__name__)

_MAX_BLOCKS = 4096


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Retries of a Ray job.

    Attributes:
        max_restarts: restarts of each worker actor after its process dies (-1: unlimited).
        max_task_retries: retries of a batch whose worker died (-1: unlimited; finite by
            default, so an input that kills its worker every time cannot stall the job).
        max_errored_blocks: batches allowed to fail for good before the job is aborted (-1:
            unlimited); their inputs get error rows.
    """

    max_restarts: int = 4
    max_task_retries: int = 3
    max_errored_blocks: int = 8

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < -1:
                raise ValueError(f"{field.name} must be an int >= -1, got {value!r}")


def import_ray() -> Any:
    """``ray`` with Ray Data, or an EngineError naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise EngineError(f"the Ray engine needs Ray Data ({error}); install it with: pip install samkit[ray]"
                          ) from None
    return ray


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail fast on a ``host:port`` / ``ray://host:port`` that nothing listens on."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"a Ray address is 'auto', 'host:port' or 'ray://host:port', got {address!r}")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise EngineError(f"cannot reach a Ray cluster at {address}: {error}. Check the address (or RAY_ADDRESS), "
                          "or leave it unset to start a local Ray") from None


@contextlib.contextmanager
def ray_cluster(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Yield ``ray`` connected to a cluster; shut down on exit only what this call started.

    An already initialised Ray is used as it is. Else ``address`` (or ``RAY_ADDRESS``) names an
    existing cluster, and without one a local Ray starts with ``num_cpus`` CPUs (None: all).
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS") or None
        try:
            if target:
                _check_reachable(target)
                ray.init(address=target, log_to_driver=False)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        except (EngineError, ValueError):
            raise
        except Exception as error:
            where = f"connect to Ray at {target}" if target else "start a local Ray"
            raise EngineError(f"cannot {where}: {type(error).__name__}: {error}") from None
        started = True
    elif address:
        logger.info("Ray is already initialised; using it instead of connecting to %s", address)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _cpus_per_worker(ray: Any, workers: int, gpus_per_worker: float) -> float:
    """GPU workers take 1 CPU; CPU workers share the cluster's CPUs, at most one node's each."""
    if gpus_per_worker > 0:
        return 1.0
    per_node = [node.get("Resources", {}).get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")]
    total = float(ray.cluster_resources().get("CPU", 1.0))
    return float(max(1, min(math.floor(total / workers), int(max(per_node, default=total)))))


def ray_rows(items: Sequence[Mapping[str, Any]], worker_kwargs: Mapping[str, Any], *, workers: int | tuple[int, int],
             gpus_per_worker: float, cpus_per_worker: float | None, batch_size: int, retry: RetryPolicy,
             ray: Any) -> Iterator[dict[str, Any]]:
    """Manifest rows of ``items`` (``path``, ``file_name``, ``output``), as the actors finish them."""
    blocks = max(1, min(_MAX_BLOCKS, math.ceil(len(items) / batch_size)))
    if isinstance(workers, int):
        workers = min(workers, blocks)  # an actor without a block would only load the model
    smallest = workers if isinstance(workers, int) else workers[0]
    cpus = cpus_per_worker if cpus_per_worker is not None else _cpus_per_worker(ray, smallest, gpus_per_worker)
    kwargs = dict(worker_kwargs, threads=max(1, int(cpus)), batch_size=batch_size)
    compute = (ray.data.ActorPoolStrategy(size=workers) if isinstance(workers, int)
               else ray.data.ActorPoolStrategy(min_size=workers[0], max_size=workers[1]))
    remote_args: dict[str, Any] = {"max_restarts": retry.max_restarts, "max_task_retries": retry.max_task_retries}
    if gpus_per_worker > 0:
        remote_args["num_gpus"] = gpus_per_worker
    context = ray.data.DataContext.get_current()
    saved = (context.max_errored_blocks, context.enable_progress_bars)
    context.max_errored_blocks = retry.max_errored_blocks
    context.enable_progress_bars = False
    try:
        dataset = ray.data.from_items([dict(item) for item in items], override_num_blocks=blocks)
        with warnings.catch_warnings():
            # Ray 2.60 deprecates extra remote args of map_batches but names no replacement for
            # max_restarts / max_task_retries; they still apply to the pool's actors.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated", category=Warning)
            mapped = dataset.map_batches(ImageWorker, fn_constructor_kwargs=kwargs, compute=compute,
                                         batch_size=batch_size, batch_format="numpy", num_cpus=cpus,
                                         **remote_args)
        for row in mapped.iter_rows():
            yield dict(row)
    finally:
        context.max_errored_blocks, context.enable_progress_bars = saved
