"""The data engine's model stages over a project: prefill (stage 2), auto (stage 3), retrain.

* :func:`prefill`: a detector (any spec of :func:`samkit.adapters.registry.load_detector`) ->
  detect-then-segment -> masks whose detection score is >= ``min_score`` stored as stage 2,
  source ``"prefill"``, status ``"pending"`` (the annotator accepts or rejects them). Images
  that already hold a current prefill mask are left alone, so a rerun adds nothing twice.
* :func:`auto`: segment-everything (preset ``"sa1b"``) on the images without an accepted mask,
  through :func:`samkit.engine.run_job` (``engine="local"`` or ``"ray"``); the job's folder is
  ``<project>/.samkit/auto/<settings hash>/`` so a rerun resumes it. The masks are stored as
  stage 3, source ``"auto"``, status ``"accepted"`` (the paper accepts stage-3 masks as they are).
* :func:`retrain`: fine-tune the current model (else ``base``) on the accepted masks with
  :func:`samkit.train.train`; the images with accepted masks are split (seeded) into training
  and held-out images, the held-out mIoU with one point and with one box
  (:func:`samkit.train.evaluate`) is measured before and after, the checkpoint is written in
  Meta's format and registered as the next model version with both measurements.

Example:
    >>> with Project.open("photos/") as project:                                 # doctest: +SKIP
    ...     prefill(project, Segmenter(load_model("sam_vit_b.pth")), "yolov8n.pt").added
    ...     auto(project, "sam_vit_b.pth", engine="ray", workers=4).added
    ...     retrain(project, base="sam_vit_b.pth", steps=500).after["box_miou"]
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["RetrainReport", "StageReport", "auto", "prefill", "retrain"]

logger = logging.getLogger(__name__)

WORK_FOLDER = ".samkit"
#: Fewest images with accepted masks :func:`retrain` works with (one to train on, one held out).
MIN_RETRAIN_IMAGES = 2
_METRIC_KEYS = ("point_miou", "point_oracle_miou", "box_miou", "num_masks", "num_images")


@dataclasses.dataclass(frozen=True)
class StageReport:
    """What a prefill or auto run did.

    Attributes:
        stage: 2 (prefill) or 3 (auto).
        processed: ids of the images the model ran on in this call.
        skipped: ``(path, reason)`` of images left alone (already done, unreadable, ...).
        added: ids of the annotations stored.
        model_version: the version recorded on the masks (None when the project has none).
        out: the engine job's folder (auto only).
    """

    stage: int
    processed: list[int]
    skipped: list[tuple[str, str]]
    added: list[int]
    model_version: str | None
    out: Path | None = None


@dataclasses.dataclass(frozen=True)
class RetrainReport:
    """What :func:`retrain` did: the new version, its parent, and held-out metrics before / after.

    ``before`` / ``after``: ``point_miou``, ``point_oracle_miou``, ``box_miou``, ``num_masks``,
    ``num_images`` of :func:`samkit.train.evaluate` on the held-out images.
    """

    version: str
    parent: str | None
    checkpoint: Path
    train_images: list[int]
    held_out_images: list[int]
    before: dict[str, Any]
    after: dict[str, Any]
    steps: int


# -- shared pieces ---------------------------------------------------------------------------------
def _current_version(project: Any) -> str | None:
    current = project.current_model()
    return current.version if current is not None else None


def _select_images(project: Any, images: Sequence[int] | None) -> list[Any]:
    if images is None:
        return project.images()
    return [project.image(int(i)) for i in images]


def _load_rgb(path: Path) -> np.ndarray:
    from samkit.transforms import load_image

    return load_image(path)


def _notify(progress: Callable[[int, int], None] | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


# -- stage 2: prefill ------------------------------------------------------------------------------
def prefill(project: Any, segmenter: Any, detector: Any, *, min_score: float = 0.5, label: str | None = None,
            images: Sequence[int] | None = None, model_version: str | None = None,
            detector_options: Mapping[str, Any] | None = None,
            progress: Callable[[int, int], None] | None = None) -> StageReport:
    """Store detect-then-segment masks as pending stage-2 prefill on images without one.

    Args:
        project: an open :class:`~samkit.engine.projects.Project`.
        segmenter: a :class:`samkit.Segmenter`.
        detector: a detector name, path or object (:func:`samkit.adapters.registry.load_detector`).
        min_score: keep detections whose score is >= this (detections without a score pass).
        label: the label stored on every mask (default: the detector's label, else ``"object"``).
        images: image ids to prefill (default: all images of the project).
        model_version: recorded on the masks (default: the project's current model version).
        detector_options: keyword arguments of ``load_detector`` (``threshold``, ``classes``, ...).
        progress: called with ``(done, total)`` after each image.

    Returns:
        :class:`StageReport`; each mask's ``score`` is its detection score.

    Raises:
        ValueError: ``min_score`` outside [0, 1]; TypeError / ValueError / FileNotFoundError: a
            detector spec that names no detector.
    """
    from samkit.adapters.registry import load_detector
    from samkit.pipelines import detect_then_segment

    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not 0 <= min_score <= 1:
        raise ValueError(f"min_score must be a number in [0, 1], got {min_score!r}")
    detect = load_detector(detector, **dict(detector_options or {}))
    version = model_version if model_version is not None else _current_version(project)
    records = _select_images(project, images)
    done_before = {a.image_id for a in project.annotations(stage=2) if a.source == "prefill"}
    processed, skipped, added = [], [], []
    for index, record in enumerate(records):
        if record.id in done_before:
            skipped.append((str(record.path), "already prefilled"))
        else:
            try:
                rgb = _load_rgb(record.path)
            except (OSError, ValueError) as error:
                skipped.append((str(record.path), f"cannot read the image: {error}"))
                logger.warning("prefill skips %s: %s", record.path, error)
            else:
                result = detect_then_segment(rgb, detect, segmenter, min_score=min_score, drop_empty=True)
                masks = result.best().masks[:, 0] if len(result) else np.zeros((0, *rgb.shape[:2]), bool)
                added.extend(project.add_annotations(  # one transaction per image
                    record.id, list(masks), label=[label or meta.get("label") or "object" for meta in result.meta],
                    scores=[meta.get("score") for meta in result.meta], stage=2, source="prefill", author="prefill",
                    model_version=version, status="pending"))
                processed.append(record.id)
        _notify(progress, index + 1, len(records))
    return StageReport(stage=2, processed=processed, skipped=skipped, added=added, model_version=version)


# -- stage 3: auto ---------------------------------------------------------------------------------
def _model_source(project: Any, model: Any) -> Any:
    if model is not None:
        return model
    current = project.current_model()
    if current is None:
        raise ValueError("no model given and the project has no registered model version; pass a checkpoint "
                         "(a path or known name) or a SAM model, or register one with project.register_model")
    return current.checkpoint


def auto(project: Any, checkpoint_or_model: Any = None, *, engine: str = "local", preset: str | None = "sa1b",
         settings: Mapping[str, Any] | None = None, workers: int = 1, gpus_per_worker: float = 0,
         batch_size: int = 4, address: str | None = None, device: str | None = None,
         images: Sequence[int] | None = None, model_version: str | None = None,
         progress: Callable[[Any], None] | None = None) -> StageReport:
    """Segment everything on the images without an accepted mask; store accepted stage-3 masks.

    Args:
        project: an open :class:`~samkit.engine.projects.Project`.
        checkpoint_or_model: a checkpoint path, known name or SAM model (default: the project's
            current model version's checkpoint).
        engine: ``"local"`` (this process) or ``"ray"`` (a Ray Data actor pool).
        preset: a preset of :data:`samkit.pipelines.PRESETS` (default ``"sa1b"``).
        settings: :class:`~samkit.pipelines.EverythingSettings` keyword arguments overriding the preset's.
        workers, gpus_per_worker, batch_size, address, device: see :func:`samkit.engine.run_job`.
        images: image ids to consider (default: all); those with an accepted mask are skipped.
        model_version: recorded on the masks (default: the project's current model version).
        progress: :func:`samkit.engine.run_job`'s progress handler.

    Returns:
        :class:`StageReport` with ``out`` the job's folder (per-image SA-1B JSON + manifest).
        Each mask's ``score`` is its predicted IoU.
    """
    from samkit.engine.job import run_job
    from samkit.engine.output import read_output, settings_sha256
    from samkit.engine.tasks import EverythingTask, describe_value

    task = EverythingTask(_model_source(project, checkpoint_or_model), preset=preset, settings=dict(settings or {}))
    task.check()
    version = model_version if model_version is not None else _current_version(project)
    digest = settings_sha256(json.loads(json.dumps(task.describe(), sort_keys=True, default=describe_value)))
    folder = project.root / WORK_FOLDER / "auto" / digest[:16]
    out = folder / "out"
    accepted = {a.image_id for a in project.annotations(status="accepted")}
    todo, skipped = [], []
    for record in _select_images(project, images):
        (skipped.append((str(record.path), "has accepted masks")) if record.id in accepted else todo.append(record))
    if not todo:
        return StageReport(stage=3, processed=[], skipped=skipped, added=[], model_version=version, out=out)
    folder.mkdir(parents=True, exist_ok=True)
    inputs = folder / "inputs.txt"
    from samkit.atomic import write_text_atomic

    write_text_atomic(inputs, "".join(f"{r.path.resolve()}\n" for r in todo))
    by_path = {str(r.path.resolve()): r for r in todo}
    run_job(inputs, task, out, engine=engine, workers=workers, gpus_per_worker=gpus_per_worker,
            batch_size=batch_size, address=address, progress=progress, device=device)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if line]
    processed, added = [], []
    now_accepted = {a.image_id for a in project.annotations(status="accepted")}  # annotators may have been busy
    for row in rows:
        record = by_path.get(os.path.abspath(row["path"]))
        if record is None:
            continue
        if row.get("status") != "ok":
            skipped.append((str(record.path), f"segment-everything failed: {row.get('error')}"))
            continue
        if record.id in now_accepted:
            skipped.append((str(record.path), "has accepted masks (added while the job ran)"))
            continue
        data = read_output(out / row["output"])
        if data is None:
            skipped.append((str(record.path), f"cannot read the job's output {out / row['output']}"))
            continue
        kept = [a for a in data["annotations"] if int(a.get("area", 1)) > 0]
        added.extend(project.add_annotations(  # one transaction per image
            record.id, [a["segmentation"] for a in kept], scores=[float(a["predicted_iou"]) for a in kept],
            label="object", stage=3, source="auto", author="auto", model_version=version, status="accepted"))
        processed.append(record.id)
    return StageReport(stage=3, processed=processed, skipped=skipped, added=added, model_version=version, out=out)


# -- retrain ---------------------------------------------------------------------------------------
class ProjectMasks:
    """A training/evaluation dataset of a project's accepted masks: items ``(image (H, W, 3)
    uint8, masks (M, H, W) bool)``, one per image id, images read on access."""

    def __init__(self, project: Any, image_ids: Sequence[int], masks: Mapping[int, Sequence[Any]]) -> None:
        self.paths = [project.image(i).path for i in image_ids]
        self.image_ids = list(image_ids)
        self._masks = {i: list(masks[i]) for i in image_ids}

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_id = self.image_ids[index]
        return _load_rgb(self.paths[index]), np.stack([a.mask() for a in self._masks[image_id]])


def split_images(image_ids: Sequence[int], *, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of image ids into (train, held out); each side gets at least one image."""
    order = np.random.default_rng(seed).permutation(sorted(image_ids)).tolist()
    held = min(max(1, round(holdout * len(order))), len(order) - 1)
    return sorted(order[held:]), sorted(order[:held])


def _metrics(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: values[k] for k in _METRIC_KEYS}


def retrain(project: Any, *, base: Any = None, steps: int = 200, holdout: float = 0.2, seed: int = 0,
            out: str | os.PathLike | None = None, device: str | None = None, images_per_step: int = 4,
            lr: float | None = None, prompt_iterations: int | None = None,
            train_options: Mapping[str, Any] | None = None, notes: str | None = None,
            progress: Callable[[int, dict], None] | None = None) -> RetrainReport:
    """Fine-tune on the accepted masks, measure held-out mIoU before / after, register the result.

    Args:
        project: an open :class:`~samkit.engine.projects.Project`.
        base: the checkpoint to start from when the project has no model version yet (the
            current version is always preferred: retraining continues the project's line).
        steps: optimiser steps (:class:`samkit.train.TrainSettings`; decoder-only fine-tuning).
        holdout: fraction of the images with accepted masks held out for the measurement.
        seed: seeds the split and the training.
        out: the checkpoint folder (default ``<project>/.samkit/models/<time>``); holds
            ``model.pth`` (Meta's format) and ``training_state.pt``.
        device: where to train (default: CUDA when available, else CPU).
        images_per_step: images per optimiser step (at most the training images).
        lr: peak learning rate (default :class:`~samkit.train.TrainSettings`'s).
        prompt_iterations: simulated prompting rounds per mask (default the paper's 11; fewer
            rounds make each step cheaper), see :class:`~samkit.train.PromptSimulation`.
        train_options: further :class:`~samkit.train.TrainSettings` fields (override the above).
        notes: stored with the model version.
        progress: called with ``(step, stats)`` after each optimiser step.

    Returns:
        :class:`RetrainReport`; the model version's metrics hold ``before``, ``after``, the split
        and the steps.

    Raises:
        ValueError: too few accepted masks, a bad ``holdout`` / ``steps``, or no model to start from.
    """
    import torch

    from samkit import load_model
    from samkit.train import PromptSimulation, TrainSettings, evaluate, train

    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    accepted: dict[int, list[Any]] = {}
    for annotation in project.annotations(status="accepted"):
        accepted.setdefault(annotation.image_id, []).append(annotation)
    if len(accepted) < MIN_RETRAIN_IMAGES:
        total = sum(len(v) for v in accepted.values())
        raise ValueError(f"retraining needs accepted masks on at least {MIN_RETRAIN_IMAGES} images (some to train "
                         f"on, some held out to measure); the project has {total} accepted masks on "
                         f"{len(accepted)} images")
    current = project.current_model()
    if current is None and base is None:
        raise ValueError("the project has no model version yet: pass base= (a checkpoint path or known name) "
                         "to start from")
    source = current.checkpoint if current is not None else base
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(source, device=device)
    train_ids, held_ids = split_images(list(accepted), holdout=holdout, seed=seed)
    train_set, held_set = ProjectMasks(project, train_ids, accepted), ProjectMasks(project, held_ids, accepted)
    before = _metrics(evaluate(model, held_set))
    torch.manual_seed(seed)
    options: dict[str, Any] = dict(steps=steps, images_per_step=min(images_per_step, len(train_set)),
                                   warmup_steps=min(250, max(1, steps // 10)), seed=seed, device=device)
    if lr is not None:
        options["lr"] = lr
    if prompt_iterations is not None:
        options["prompting"] = PromptSimulation(num_iterations=prompt_iterations,
                                                num_mask_only=min(2, prompt_iterations - 1))
    settings = TrainSettings(**dict(options, **dict(train_options or {})))
    folder = Path(out) if out is not None else \
        project.root / WORK_FOLDER / "models" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"the checkpoint folder {folder} is not empty; choose another out")
    train(model, train_set, settings, output_dir=folder, on_step=progress)
    after = _metrics(evaluate(model, held_set))
    checkpoint = folder / "model.pth"
    parent = current.version if current is not None else None
    metrics = {"before": before, "after": after, "train_images": train_ids, "held_out_images": held_ids,
               "steps": settings.steps, "prompt_iterations": settings.prompting.num_iterations, "seed": seed,
               "base": None if current is not None else str(base)}
    version = project.register_model(checkpoint, parent=parent, metrics=metrics, notes=notes)
    logger.info("registered %s: held-out box mIoU %.3f -> %.3f", version, before["box_miou"], after["box_miou"])
    return RetrainReport(version=version, parent=parent, checkpoint=checkpoint, train_images=train_ids,
                         held_out_images=held_ids, before=before, after=after, steps=steps)
