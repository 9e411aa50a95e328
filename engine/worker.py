"""The per-worker callable: decode, run the task, write the output, return one manifest row per input.

:class:`ImageWorker` is what Ray Data's ``map_batches`` instantiates once per actor (so the model
loads once per actor) and what the local engine calls in-process. Every input is handled on its
own: an image that fails to decode or to process becomes an ``"error"`` row with the reason and
the batch goes on. Outputs are written atomically before the row is returned, so a row with
status ``"ok"`` always names a complete file; if the worker process dies mid-batch, the batch is
retried and rewrites the same files.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .output import stable_image_id
from .sources import read_image

__all__ = ["ROW_FIELDS", "ImageWorker"]

logger = logging.getLogger(__name__)

#: The manifest row of one input, in order.
ROW_FIELDS = ("path", "output", "status", "error", "masks", "seconds", "worker")


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 2000 else text[:1997] + "..."


class ImageWorker:
    """Builds ``task`` once, then turns batches of inputs into output files and manifest rows.

    Args:
        task: a task spec (:mod:`samkit.engine.tasks`); built here with ``device``.
        out: the output folder (on a cluster: a path every worker node shares).
        settings_sha256, settings: the job's settings hash and settings, stored in each output.
        device: torch device for the model (None: ``"cpu"``).
        threads: torch CPU threads for this worker (None: leave torch's default).
        batch_encode: encode each batch's images in one encoder call before running the task
            (their embeddings are then found in the segmenter's cache); None: only on CUDA.
        batch_size: the largest batch expected (sizes the embedding cache).
    """

    def __init__(self, task: Any, out: str, settings_sha256: str, settings: Mapping[str, Any], *,
                 device: str | None = None, threads: int | None = None, batch_encode: bool | None = None,
                 batch_size: int = 1) -> None:
        import torch

        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        self.device = device = device or "cpu"
        self.batch_encode = device.startswith("cuda") if batch_encode is None else bool(batch_encode)
        self.runner = task.build(device=device, cache_size=max(4, batch_size + 1))
        self.out = Path(out)
        self.settings_sha256, self.settings = settings_sha256, dict(settings)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    # -- one input ---------------------------------------------------------------------------
    def _write(self, item: Mapping[str, Any], payload: dict[str, Any]) -> None:
        from samkit.atomic import write_json_atomic
        from samkit.formats import json_default

        payload = dict(payload, samkit={"settings_sha256": self.settings_sha256, "file_name": item["file_name"],
                                        "path": item["path"], "settings": self.settings})
        write_json_atomic(self.out / item["output"], payload, default=json_default)

    def _run_one(self, item: Mapping[str, Any], image: Any, started: float) -> dict[str, Any]:
        row = {"path": item["path"], "output": None, "status": "error", "error": None, "masks": 0,
               "seconds": 0.0, "worker": self.name}
        try:
            if isinstance(image, BaseException):
                raise image
            payload, masks = self.runner.run(image, image_id=stable_image_id(item["file_name"]),
                                             file_name=item["file_name"])
            self._write(item, payload)
            row.update(output=item["output"], status="ok", masks=int(masks))
        except Exception as error:  # one bad input never stops the batch
            logger.info("%s failed: %s", item["path"], error)
            row["error"] = _error_text(error)
        row["seconds"] = round(time.perf_counter() - started, 6)
        return row

    def _decode(self, item: Mapping[str, Any]) -> Any:
        try:
            return read_image(item["path"])
        except Exception as error:
            return error

    # -- a batch -----------------------------------------------------------------------------
    def process(self, items: Sequence[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
        """One manifest row per item (``path``, ``file_name``, ``output``), in order."""
        if not self.batch_encode or len(items) < 2 or getattr(self.runner, "segmenter", None) is None:
            for item in items:
                started = time.perf_counter()
                yield self._run_one(item, self._decode(item), started)
            return
        started = time.perf_counter()
        images = [self._decode(item) for item in items]
        decoded = [im for im in images if not isinstance(im, BaseException)]
        if decoded:
            try:
                self.runner.segmenter.encode_batch(decoded, batch_size=len(decoded))
            except Exception as error:  # each image is then encoded on its own
                logger.warning("batched encoding failed (%s); encoding one image at a time", error)
        shared = (time.perf_counter() - started) / len(items)
        for item, image in zip(items, images):
            yield self._run_one(item, image, time.perf_counter() - shared)

    def __call__(self, batch: Mapping[str, Any]) -> Any:
        """Ray Data entry point: a numpy batch of ``path``/``file_name``/``output`` to a pyarrow table."""
        import pyarrow as pa

        keys = ("path", "file_name", "output")
        items = [{k: str(batch[k][i]) for k in keys} for i in range(len(batch["path"]))]
        rows = list(self.process(items))
        schema = pa.schema([("path", pa.string()), ("output", pa.string()), ("status", pa.string()),
                            ("error", pa.string()), ("masks", pa.int64()), ("seconds", pa.float64()),
                            ("worker", pa.string())])
        return pa.Table.from_pylist(rows, schema=schema)
