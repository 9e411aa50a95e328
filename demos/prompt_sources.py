"""What the demo's detector, text and gaze tabs do, without Gradio: arrays and files in, plain values out.

Detectors and text pipelines are offered when their libraries are installed (or passed in
ready-made) and built once per process per setting, in a small :class:`Catalog`.
"""
from __future__ import annotations

import importlib.util
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from samkit.cli.common import count
from samkit.formats.coco import coco_annotations, coco_dataset, write_coco_json
from samkit.formats.png import save_masks_zip
from samkit.results import Segmentation
from samkit.transforms import to_rgb_uint8
from samkit.visualize import draw_overlay, overlay_segmentation

from .handlers import SamService, write_coco


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _words(text: str | None) -> list[str]:
    return [w.strip() for w in re.split(r"[,\n]", text or "") if w.strip()]


class Catalog:
    """Named ways to build something (a detector, a text pipeline), built once per setting.

    Args:
        ready: ``{name: object}`` offered first, used as given.
        kinds: ``{name: {"needs": str, "build": callable(**setting)}}``; ``needs`` names what the
            user must fill in (``"weights"``, ``"queries"``), for the error message.
        size: at most this many built objects are kept (the oldest is dropped).
    """

    def __init__(self, ready: dict[str, Any] | None, kinds: dict[str, dict[str, Any]], *, size: int = 4) -> None:
        self.ready, self.kinds, self.size = dict(ready or {}), kinds, size
        self._built: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.ready) + list(self.kinds)

    def get(self, name: str, **setting: Any) -> Any:
        if name in self.ready:
            return self.ready[name]
        if name not in self.kinds:
            raise ValueError(f"expected one of {self.names}, got {name!r}")
        needs = self.kinds[name]["needs"]
        if "weights" in needs and not setting.get("weights"):
            raise ValueError(f"{name} needs weights: a file path, folder or model name, got none")
        if "queries" in needs and not setting.get("queries"):
            raise ValueError(f"{name} needs text queries (comma-separated), got none")
        key = (name, *sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in setting.items()))
        with self._lock:
            if key not in self._built:
                if len(self._built) >= self.size:
                    self._built.pop(next(iter(self._built)))
                self._built[key] = self.kinds[name]["build"](**setting)
            return self._built[key]


def _table(result: Segmentation, names: list[str], scores: list[float | None]) -> list[dict[str, Any]]:
    areas, boxes = result.areas()[:, 0], result.boxes()[:, 0]
    return [{"label": name, "score": score, "predicted_iou": m.get("predicted_iou", float(result.scores[i, 0])),
             "box": boxes[i].tolist(), "area": int(areas[i])}
            for i, (name, score, m) in enumerate(zip(names, scores, result.meta))]


def _downloads(result: Segmentation, names: list[str], scores: list[float | None],
               folder: Path) -> tuple[str, str]:
    """Masks zip (``mask_<i>_<name>.png``) and a COCO file with one category per name.

    Each mask's category is the one its name labels; its score the given score, else its
    predicted IoU.
    """
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(sorted(set(names)))]
    best = result.best()
    labels = [{"label": name, "score": score} for name, score in zip(names, scores)]
    annotations = coco_annotations(best.masks[:, 0], best.scores[:, 0], labels, 1, categories=categories,
                                   score_key="score")
    files = [f"mask_{i:03d}_{re.sub(r'[^A-Za-z0-9_-]+', '_', n).strip('_') or 'object'}.png"
             for i, n in enumerate(names)]
    zip_file = save_masks_zip(result.masks[:, 0], folder / "masks.zip", names=files)
    coco = write_coco(folder / "coco.json", result.image_size, annotations, categories)
    return str(zip_file), str(coco)


# -- detect then segment -----------------------------------------------------------------------------
def detector_kinds() -> dict[str, dict[str, Any]]:
    """Detector kinds whose libraries are installed, one per family of the detector registry."""
    from samkit.adapters.registry import detector_families, load_detector

    kinds: dict[str, dict[str, Any]] = {}
    for family in detector_families(installed_only=True):
        def build(weights: str, queries: list[str], score: float, family: str = family.name) -> Any:
            return load_detector(weights, family=family, threshold=score, queries=queries or None)

        kinds[family.label] = {"needs": "weights queries" if family.needs_queries else "weights", "build": build}
    return kinds


def detector_catalog(ready: dict[str, Any] | None = None) -> Catalog:
    return Catalog(ready, detector_kinds())


def get_detector(catalog: Catalog, name: str, weights: str, queries: str, score: float) -> Any:
    return catalog.get(name, weights=(weights or "").strip(), queries=_words(queries), score=float(score))


def run_detect(service: SamService, detector: Any, image: Any, min_score: float,
               folder: Path) -> tuple[np.ndarray, list[dict[str, Any]], str, str]:
    """Detect, then segment each box: (overlay, one row per object, masks zip, COCO JSON)."""
    from samkit.pipelines.detect_segment import DetectThenSegment

    rgb = to_rgb_uint8(image)
    result = service.call(DetectThenSegment(detector, service.segmenter, min_score=float(min_score)), rgb)
    names = [str(m.get("label") if m.get("label") is not None else m.get("class_id", "object")) for m in result.meta]
    scores = [m.get("score") for m in result.meta]
    rows = _table(result, names, scores)
    captions = [f"{n} {s:.2f}" if s is not None else n for n, s in zip(names, scores)]
    boxes = np.asarray([m["box"] for m in result.meta]) if len(result) else None
    overlay = overlay_segmentation(rgb, result, boxes=boxes, captions=captions)
    return (overlay, rows, *_downloads(result, names, scores, folder))


# -- text to mask --------------------------------------------------------------------------------------
def text_available() -> bool:
    """Whether this samkit has the text-to-mask pipeline."""
    return _installed("samkit.pipelines.text_to_mask")


TEXT_METHODS = {  # label -> (strategy, libraries of which one must be installed)
    "Grounded: open-vocabulary detector + SAM": ("grounded", ("transformers", "ultralytics")),
    "CLIP rerank of segment-everything masks": ("clip_rerank", ("open_clip",)),
    "CLIP embedding prompt (models trained with it)": ("clip_prompt", ("open_clip",)),
    "SAM 3 concept prompts (transformers)": ("sam3", ("transformers",)),
}


def text_kinds(service: SamService) -> dict[str, dict[str, Any]]:
    """Text-to-mask methods whose libraries are installed, each building a ``TextToMask`` from
    ``weights`` (the detector, CLIP weights file or tag, or SAM 3 folder), ``clip_model`` and ``threshold``."""
    if not text_available():
        return {}
    device = str(service.segmenter.device)

    def method(strategy: str) -> dict[str, Any]:
        def build(weights: str, clip_model: str, threshold: float | None) -> Any:
            from samkit.pipelines.text_to_mask import TextToMask

            settings: dict[str, Any] = {}
            if strategy == "grounded":
                settings["detector"] = weights
            elif strategy == "sam3":
                settings.update(model=weights, device=device)
            else:
                from samkit.adapters.clip import ClipModel

                pretrained = None if weights.lower() == "none" else weights  # none: random weights
                settings["clip"] = ClipModel(clip_model or "ViT-B-32", pretrained=pretrained, device=device)
            if threshold is not None and strategy != "clip_prompt":
                settings["threshold"] = threshold
            return TextToMask(None if strategy == "sam3" else service.segmenter, strategy=strategy, **settings)

        return {"needs": "weights", "build": build}

    return {label: method(strategy) for label, (strategy, libraries) in TEXT_METHODS.items()
            if any(_installed(name) for name in libraries)}


def text_catalog(service: SamService, phrase_detectors: dict[str, Callable[..., Any]] | None = None) -> Catalog:
    """Ready-made phrase detectors (``(image, phrases) -> boxes, scores, labels``) first, then the installed kinds."""
    ready = {}
    if text_available():
        from samkit.pipelines.text_to_mask import TextToMask

        ready = {name: TextToMask(service.segmenter, strategy="grounded", detector=detector)
                 for name, detector in (phrase_detectors or {}).items()}
    return Catalog(ready, text_kinds(service))


def get_text_pipeline(catalog: Catalog, name: str, weights: str, clip_model: str, threshold: float | None) -> Any:
    return catalog.get(name, weights=(weights or "").strip(), clip_model=(clip_model or "").strip(),
                       threshold=None if threshold is None else float(threshold))


def run_text(service: SamService, pipeline: Any, image: Any, phrases: str,
             folder: Path) -> tuple[np.ndarray, list[dict[str, Any]], str, str]:
    """Masks matching the phrases: (overlay, one row per mask, masks zip, COCO JSON)."""
    words = _words(phrases)
    if not words:
        raise ValueError(f"phrases must be one or more comma-separated phrases, got {phrases!r}")
    rgb = to_rgb_uint8(image)
    result = service.call(pipeline, rgb, words)
    names = [str(m.get("phrase")) for m in result.meta]
    scores = [m.get("text_score") for m in result.meta]
    rows = _table(result, names, scores)
    boxes = result.boxes()[:, 0] if len(result) else None
    captions = [f"{n} {s:.2f}" if s is not None else n for n, s in zip(names, scores)]
    overlay = draw_overlay(rgb, result.masks[:, 0], boxes=boxes, captions=captions)
    return (overlay, rows, *_downloads(result, names, scores, folder))


# -- gaze replay -------------------------------------------------------------------------------------
def read_gaze_csv(path: str | os.PathLike) -> np.ndarray:
    """Gaze samples from a CSV of ``t, x, y[, confidence]`` (seconds, pixels or normalized); a header row is skipped."""
    text = Path(path).read_text(encoding="utf-8-sig").strip().splitlines()
    rows = []
    for number, line in enumerate(text, start=1):
        cells = [c.strip() for c in line.replace(";", ",").split(",") if c.strip()]
        try:
            values = [float(c) for c in cells]
        except ValueError:
            if number == 1:
                continue  # header
            raise ValueError(f"gaze CSV line {number}: expected numbers t, x, y[, confidence], got {line!r}") from None
        if len(values) not in (3, 4):
            raise ValueError(f"gaze CSV line {number}: expected 3 or 4 columns (t, x, y[, confidence]), got "
                             f"{len(values)}")
        rows.append(values)
    if not rows or len({len(r) for r in rows}) != 1:
        raise ValueError(f"gaze CSV {Path(path).name} must hold rows of t, x, y[, confidence] with one column count, "
                         f"got {len(rows)} rows")
    return np.asarray(rows, dtype=np.float64)


def _natural(path: str) -> list[Any]:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", os.path.basename(path))]


def run_gaze(service: SamService, csv_path: str, frame_paths: Sequence[str], fps: float, coordinates: str,
             folder: Path) -> tuple[list[tuple[np.ndarray, str]], str, str, str]:
    """Gaze replay: (overlay per frame with caption, summary, masks zip, COCO JSON)."""
    from samkit.adapters.gaze import GazeAdapter
    from samkit.pipelines.gaze_to_mask import GazeToMask

    if not csv_path:
        raise ValueError("upload a gaze CSV (t, x, y[, confidence] per row)")
    if not frame_paths:
        raise ValueError("upload the frames (image files, in time order by name)")
    if not fps or fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    paths = sorted(frame_paths, key=_natural)
    frames = [to_rgb_uint8(p) for p in paths]
    if len({f.shape for f in frames}) > 1:
        raise ValueError(f"frames must share one size, got {sorted({f.shape[:2] for f in frames})}")
    samples = read_gaze_csv(csv_path)
    adapter = GazeAdapter(coordinates=coordinates, frame_size=frames[0].shape[:2])
    times = np.arange(len(frames)) / float(fps)
    prompts = adapter(samples, times)
    sequence = service.call(GazeToMask(service.segmenter, prompts), frames, frame_times=times)
    gallery, masks, annotations = [], [], []
    for i, (frame, prompt, result) in enumerate(zip(frames, prompts, sequence)):
        if result is None:
            gallery.append((frame, f"frame {i}: no fixation"))
            masks.append(np.zeros(frame.shape[:2], bool))
            continue
        carried = " (mask carried over)" if sequence.reused[i] else ""
        gallery.append((overlay_segmentation(frame, result, points=prompt.points[0], labels=prompt.labels[0]),
                        f"frame {i}: fixation {result.meta[0].get('fixation_index')}{carried}"))
        masks.append(result.masks[0, 0])
        annotations += result.to_coco(i + 1)
    images = [{"id": i + 1, "file_name": os.path.basename(p), "height": f.shape[0], "width": f.shape[1]}
              for i, (p, f) in enumerate(zip(paths, frames))]
    names = [f"frame_{i:04d}.png" for i in range(len(frames))]
    zip_file = save_masks_zip(np.stack(masks), folder / "masks.zip", names=names)
    coco = write_coco_json(folder / "coco.json",
                           coco_dataset(images, annotations, [{"id": 1, "name": "gazed object"}]))
    prompted = int(sum(r is not None for r in sequence))
    info = (f"{count(len(frames), 'frame')}, {count(prompted, 'frame')} with a fixation, "
            f"{int(sequence.reused.sum())} carried over from the previous frame.")
    return gallery, info, str(zip_file), str(coco)
