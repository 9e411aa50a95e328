"""The data engine: batch jobs over large image collections, on Ray Data or in one process.

    >>> from samkit.engine import EverythingTask, run_job, TextProgress            # doctest: +SKIP
    >>> summary = run_job("photos/", EverythingTask("sam_vit_b.pth", preset="sa1b"), "out/",
    ...                   engine="ray", workers=4, gpus_per_worker=1, progress=TextProgress())  # doctest: +SKIP
    >>> summary.ok, summary.errors, round(summary.images_per_second, 1)           # doctest: +SKIP

Flow: the driver lists paths (never decoded images) and passes them to
``ray.data.from_items``; ``map_batches`` runs :class:`ImageWorker` on an actor pool
(``compute=ray.data.ActorPoolStrategy``), so each actor loads the model once, decodes its
images, runs the task, writes one JSON per image atomically and returns a small manifest row;
the driver appends the rows to ``out/manifest.jsonl`` as they stream back (``iter_rows``) and
reports progress. ``engine="local"`` runs the same worker in this process with the same outputs.
Layout, resume and naming: :mod:`samkit.engine.output`; sources: :mod:`samkit.engine.sources`;
tasks: :mod:`samkit.engine.tasks`; retries: :class:`RetryPolicy`.

Memory. A worker holds one batch at a time, so its peak is bounded by the batch size and the
image size, never by the dataset::

    peak per worker ~= model + B * (H * W * 3)                  decoded batch (uint8)
                       + E * (encoder activations at 1024 x 1024)  E = B with batch_encode, else 1
                       + N * H * W                              one image's result masks (bool)
                       + task working memory                    segment everything: points_per_batch
                                                                  * 3 * 256 * 256 * 4 B of logits
                                                                  plus the survivors' packed masks
                       + one output JSON                        ~ the RLE of the N masks

with B = ``batch_size``, H x W the largest image, N its number of masks; the embedding cache
adds (B + 1) * 256 * 64 * 64 * 4 B (4 MiB per cached image). Rows sent back are a few hundred
bytes; the driver holds the list of paths and one row per input (the manifest), and
``merge_coco_path`` holds the merged dataset in memory while writing it.

Annotation projects (the paper's human loop: assisted, semi-automatic and automatic stages,
retraining) live in :mod:`samkit.engine.projects`; :class:`Project` is re-exported here.
"""
from .errors import EngineError
from .job import JobSummary, run_job
from .progress import JobProgress, TextProgress
from .projects import Project
from .ray_backend import RetryPolicy
from .sources import Input, list_inputs, read_image
from .tasks import DetectTask, EverythingTask, TextTask
from .worker import ImageWorker

__all__ = ["DetectTask", "EngineError", "EverythingTask", "ImageWorker", "Input", "JobProgress", "JobSummary",
           "Project", "RetryPolicy", "TextProgress", "TextTask", "list_inputs", "read_image", "run_job"]
