"""``run_job``: one task over every image of a source, on Ray Data or in this process.

Order of work, so that bad input fails before anything is written: list the inputs, check the
task and the output folder, plan the resume (refusing other settings), connect to Ray (or build
the task here for ``engine="local"``); then run, appending manifest rows as results arrive;
then rewrite the manifest with one row per input and optionally merge a COCO file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .errors import EngineError
from .output import MANIFEST, Manifest, merge_coco, output_name, read_output, settings_sha256
from .progress import JobProgress, ProgressHandler
from .ray_backend import RetryPolicy, ray_cluster, ray_rows
from .sources import list_inputs
from .tasks import check_task, describe_value
from .worker import ImageWorker

__all__ = ["JobSummary", "run_job"]

logger = logging.getLogger(__name__)

ENGINES = ("ray", "local")
_LOST = ("lost: its batch failed after every retry (a worker process died each time); rerun the job to retry it")


@dataclasses.dataclass(frozen=True)
class JobSummary:
    """What a job did.

    Attributes:
        total: inputs of the source; ok / errors / skipped: of this run (skipped: done before).
        masks: masks written by this run.
        seconds: wall time of the run (listing and start-up included).
        out, manifest: the output folder and its manifest; merged: the COCO file, if asked for.
    """

    total: int
    ok: int
    errors: int
    skipped: int
    masks: int
    seconds: float
    engine: str
    workers: int | tuple[int, int]
    out: Path
    manifest: Path
    merged: Path | None = None

    @property
    def images_per_second(self) -> float:
        """Inputs processed by this run (ok + errors) per second of wall time."""
        processed = self.ok + self.errors
        return processed / self.seconds if self.seconds > 0 else 0.0


def _check_arguments(engine: str, workers: Any, gpus_per_worker: Any, cpus_per_worker: Any, batch_size: Any,
                     address: Any) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    pool = isinstance(workers, tuple) and len(workers) == 2 and all(isinstance(w, int) for w in workers) \
        and 1 <= workers[0] <= workers[1]
    if not (pool or (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1)):
        raise ValueError(f"workers must be an int >= 1 or (min, max) with 1 <= min <= max, got {workers!r}")
    if isinstance(gpus_per_worker, bool) or not isinstance(gpus_per_worker, (int, float)) or gpus_per_worker < 0:
        raise ValueError(f"gpus_per_worker must be a number >= 0, got {gpus_per_worker!r}")
    if cpus_per_worker is not None and (isinstance(cpus_per_worker, bool) or
                                        not isinstance(cpus_per_worker, (int, float)) or cpus_per_worker <= 0):
        raise ValueError(f"cpus_per_worker must be None or a number > 0, got {cpus_per_worker!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if engine == "local" and (workers != 1 or address is not None or gpus_per_worker > 1):
        raise ValueError(f"engine='local' runs one worker in this process: workers=1, no address and at most one "
                         f"GPU; got workers={workers!r}, address={address!r}, gpus_per_worker={gpus_per_worker!r}")


def _differences(stored: Any, ours: Mapping[str, Any]) -> str:
    if not isinstance(stored, Mapping):
        return f"stored settings {stored!r}"
    keys = sorted(k for k in set(stored) | set(ours) if stored.get(k) != ours.get(k))
    return ", ".join(f"{k}: {stored.get(k)!r} there, {ours.get(k)!r} now" for k in keys[:3]) or "the settings hash"


def _plan(items: Sequence[dict[str, Any]], out: Path, digest: str, settings: Mapping[str, Any],
          restart: bool) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Inputs to run, and rows for the inputs an earlier run finished with these settings."""
    todo, done, other = [], {}, []
    for item in items:
        target = out / item["output"]
        if not target.is_file():
            todo.append(item)
            continue
        data = read_output(target) if not restart else None
        block = data.get("samkit") if data is not None else None
        if isinstance(block, dict) and block.get("settings_sha256") == digest:
            done[item["path"]] = {"path": item["path"], "output": item["output"], "status": "ok", "error": None,
                                  "masks": len(data["annotations"]), "seconds": None, "worker": None}
            continue
        if isinstance(block, dict) and not restart:
            other.append((target, block.get("settings")))
        todo.append(item)
    if other:
        target, stored = other[0]
        raise ValueError(f"{out} holds outputs made with other settings for {len(other)} of the inputs (e.g. "
                         f"{target.name}: {_differences(stored, settings)}); pass restart=True (--restart) to "
                         "recompute them, or choose another output folder")
    return todo, done


def _torch_threads(threads: int | None = None) -> int:
    """torch's CPU thread count, after setting it to ``threads`` when given."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def _local_rows(worker: ImageWorker, items: Sequence[dict[str, Any]], batch_size: int) -> Iterator[dict[str, Any]]:
    for start in range(0, len(items), batch_size):
        yield from worker.process(items[start:start + batch_size])


def run_job(source: str | os.PathLike, task: Any, out: str | os.PathLike, *, engine: str = "ray",
            workers: int | tuple[int, int] = 1, gpus_per_worker: float = 0, cpus_per_worker: float | None = None,
            batch_size: int = 4, address: str | None = None, num_cpus: int | None = None, restart: bool = False,
            merge_coco_path: str | os.PathLike | None = None, progress: ProgressHandler | None = None,
            retry: RetryPolicy = RetryPolicy(), device: str | None = None,
            batch_encode: bool | None = None) -> JobSummary:
    """Run ``task`` on every image of ``source``; outputs and manifest under ``out``.

    Args:
        source: folder, glob, list file, URI or image (:mod:`samkit.engine.sources`).
        task: :class:`~samkit.engine.EverythingTask`, :class:`~samkit.engine.DetectTask`,
            :class:`~samkit.engine.TextTask` (or an object with ``describe``/``check``/``build``).
        out: output folder (created; on a cluster, a path shared by every node).
        engine: ``"ray"`` (Ray Data actor pool) or ``"local"`` (this process, same outputs).
        workers: actors in the pool, or ``(min, max)`` for an autoscaling pool.
        gpus_per_worker: GPUs per actor (fractions share a GPU); 0 runs on CPUs.
        cpus_per_worker: CPUs per actor and its torch threads (None: 1 with GPUs, else the
            cluster's CPUs split between the workers, at most one node's).
        batch_size: inputs per actor call (bounds worker memory; see :mod:`samkit.engine`).
        address: an existing cluster (``"auto"``, ``"host:port"``, ``"ray://host:port"``; default
            ``RAY_ADDRESS``); without one a local Ray starts with ``num_cpus`` CPUs.
        restart: recompute every input, discarding outputs of earlier runs of any settings.
        merge_coco_path: also write one COCO instances file of all ok outputs at the end.
        progress: called with a :class:`~samkit.engine.JobProgress` after each input.
        retry: :class:`~samkit.engine.RetryPolicy` (Ray only).
        device: torch device in each worker (None: ``"cuda"`` when ``gpus_per_worker > 0``, else
            ``"cpu"``; Ray makes an actor's GPUs visible as its CUDA devices).
        batch_encode: encode a batch's images in one encoder call (None: on CUDA only).

    Returns:
        :class:`JobSummary`.

    Raises:
        FileNotFoundError: the source or the model does not exist.
        ValueError: bad arguments, no images, ``out`` holds outputs of other settings.
        NotADirectoryError: ``out`` is a file.
        EngineError: Ray is not installed or unreachable, workers cannot start, the job aborted
            (outputs written so far stay valid; a rerun resumes).
    """
    started = time.perf_counter()
    _check_arguments(engine, workers, gpus_per_worker, cpus_per_worker, batch_size, address)
    if not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable taking a JobProgress, or None; got {type(progress).__name__}")
    inputs = list_inputs(source)
    check_task(task)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"the output folder {out} exists and is not a folder")
    merged = Path(merge_coco_path) if merge_coco_path is not None else None
    if merged is not None and merged.is_dir():
        raise IsADirectoryError(f"merge_coco_path {merged} is a folder; expected the path of a .json file")
    settings = json.loads(json.dumps(task.describe(), sort_keys=True, default=describe_value))
    digest = settings_sha256(settings)
    items = [{"path": i.path, "file_name": i.file_name, "output": output_name(i.file_name)} for i in inputs]
    todo, done = _plan(items, out, digest, settings, restart)
    worker_kwargs = {"task": task, "out": str(out), "settings_sha256": digest, "settings": settings,
                     "device": device or ("cuda" if gpus_per_worker > 0 else "cpu"), "batch_encode": batch_encode}

    with contextlib.ExitStack() as stack:
        ray = stack.enter_context(ray_cluster(address, num_cpus=num_cpus)) if engine == "ray" and todo else None
        local = None
        if engine == "local" and todo:  # build here, before anything is written
            threads = _torch_threads()
            local = ImageWorker(**worker_kwargs, threads=cpus_per_worker, batch_size=batch_size)
            stack.callback(_torch_threads, threads)  # this process's thread count is restored
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        if restart:
            for item in todo:
                (out / item["output"]).unlink(missing_ok=True)
        manifest = Manifest(out, restart=restart)
        counts = {"ok": 0, "errors": 0, "masks": 0}
        running = time.perf_counter()

        def report(finished: bool = False) -> None:
            if progress is not None:
                progress(JobProgress(done=len(done) + counts["ok"] + counts["errors"], total=len(items),
                                     ok=counts["ok"], errors=counts["errors"], skipped=len(done),
                                     elapsed=time.perf_counter() - running, finished=finished))

        def record(row: Mapping[str, Any]) -> None:
            manifest.append(row)
            counts["ok" if row["status"] == "ok" else "errors"] += 1
            counts["masks"] += int(row.get("masks") or 0)
            report()

        report()
        try:
            if local is not None:
                rows = _local_rows(local, todo, batch_size)
            else:
                rows = ray_rows(todo, worker_kwargs, workers=workers, gpus_per_worker=gpus_per_worker,
                                cpus_per_worker=cpus_per_worker, batch_size=batch_size, retry=retry,
                                ray=ray) if todo else iter(())
            for row in rows:
                record(row)
        except (KeyboardInterrupt, EngineError):
            manifest.close()
            raise
        except Exception as error:
            manifest.close()
            if not manifest.rows and not manifest.earlier:
                manifest.path.unlink(missing_ok=True)
            if created and not any(out.iterdir()):
                out.rmdir()
            raise EngineError(f"the job stopped after {counts['ok'] + counts['errors']} of {len(todo)} inputs: "
                              f"{type(error).__name__}: {error}. Outputs written so far are complete; rerun the "
                              "same job to resume") from error
    for item in todo:
        if item["path"] not in manifest.rows:
            record({"path": item["path"], "output": None, "status": "error", "error": _LOST, "masks": 0,
                    "seconds": None, "worker": None})
    rows = manifest.compact([item["path"] for item in items], fill=done)
    if merged is not None:
        merged.parent.mkdir(parents=True, exist_ok=True)
        merge_coco(merged, out, rows, settings.get("task", "everything"), settings)
    report(finished=True)
    return JobSummary(total=len(items), ok=counts["ok"], errors=counts["errors"], skipped=len(done),
                      masks=counts["masks"], seconds=time.perf_counter() - started, engine=engine, workers=workers,
                      out=out, manifest=out / MANIFEST, merged=merged)
