"""Edge detection scored as the BSDS500 benchmark does: ODS, OIS and AP (paper sec. 7.2).

For each of ``thresholds`` levels ``t`` (BSDS: 99, evenly inside (0, 1)), the edge map is
binarised (``edge >= t``) and thinned to one-pixel lines (morphological thinning, as MATLAB's
``bwmorph(..., 'thin', inf)``). Its pixels are matched one-to-one to each ground-truth boundary
map within a distance of ``tolerance`` times the image diagonal (BSDS: 0.0075); the match is a
maximum bipartite matching over the pixel pairs within that distance (BSDS's ``correspondPixels``
solves the same problem with an approximate min-cost assignment and can differ by a few pixels).
Counts per image and threshold: matched ground-truth pixels summed over annotators (recall's
numerator) and their total, predicted pixels matched to any annotator (precision's numerator)
and their total.

* **ODS**: the best F-measure over thresholds of the dataset-wide precision and recall (with
  BSDS's linear interpolation between neighbouring thresholds);
* **OIS**: F of the counts summed over images, each at its own best threshold;
* **AP**: area under the dataset precision-recall curve, precision interpolated linearly in
  recall on a 0.01 grid, held at the lowest measured recall's precision below it and 0 above
  the highest recall (BSDS instead reads 0 below the lowest recall).

Ground truth from instance masks (:func:`mask_boundaries`): a pixel is on a boundary when its
right or lower neighbour belongs to another segment (background included), then the map is
thinned as the predictions are.

Needs scipy and scikit-image (``pip install samkit[eval]``).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .dataset import EvalSample
from .result import EvaluationResult, Progress, run_per_image

__all__ = ["bsds_thresholds", "edge_counts", "edge_scores", "evaluate_edges", "mask_boundaries", "match_pixels"]


def mask_boundaries(masks: Any) -> np.ndarray:
    """bool (H, W) boundary map of bool (M, H, W) instance masks (later masks over earlier ones),
    thinned like the predictions (so a perfect edge map scores 1)."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (M, H, W), got {masks.shape}")
    labels = np.zeros(masks.shape[1:], dtype=np.int64)
    for i, mask in enumerate(masks, start=1):
        labels[mask] = i
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return _thin(edge)


def match_pixels(predicted: Any, target: Any, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of boundary pixels within ``radius`` pixels (Euclidean).

    Args:
        predicted: bool (H, W) thin predicted edges.
        target: bool (H, W) ground-truth boundary.
        radius: the largest matching distance in pixels.

    Returns:
        bool (H, W) maps of the matched predicted and matched target pixels (equal counts; as
        many as any one-to-one matching allows).
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    predicted, target = np.asarray(predicted, dtype=bool), np.asarray(target, dtype=bool)
    if predicted.shape != target.shape or predicted.ndim != 2:
        raise ValueError(f"edge maps must both have shape (H, W), got {predicted.shape} and {target.shape}")
    matched_p, matched_t = np.zeros_like(predicted), np.zeros_like(target)
    pr, pc = np.nonzero(predicted)
    tr, tc = np.nonzero(target)
    if not pr.size or not tr.size:
        return matched_p, matched_t
    index = np.full(target.shape, -1, dtype=np.int64)
    index[tr, tc] = np.arange(tr.size)
    h, w = target.shape
    reach = int(np.floor(radius))
    rows, cols = [], []
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            if dy * dy + dx * dx > radius * radius:
                continue
            r, c = pr + dy, pc + dx
            inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            j = np.full(pr.size, -1, dtype=np.int64)
            j[inside] = index[r[inside], c[inside]]
            hit = j >= 0
            rows.append(np.flatnonzero(hit))
            cols.append(j[hit])
    rows_, cols_ = np.concatenate(rows), np.concatenate(cols)
    graph = csr_matrix((np.ones(rows_.size, dtype=np.int8), (rows_, cols_)), shape=(pr.size, tr.size))
    partner = maximum_bipartite_matching(graph, perm_type="column")  # per predicted pixel: its target or -1
    hit = partner >= 0
    matched_p[pr[hit], pc[hit]] = True
    matched_t[tr[partner[hit]], tc[partner[hit]]] = True
    return matched_p, matched_t


def _thin(binary: np.ndarray) -> np.ndarray:
    try:
        from skimage.morphology import thin
    except ImportError:
        raise ImportError("edge thinning needs scikit-image: pip install samkit[eval]") from None
    return thin(binary)


def bsds_thresholds(count: int) -> np.ndarray:
    """BSDS's ``count`` thresholds: evenly spaced strictly inside (0, 1)."""
    return np.linspace(1.0 / (count + 1), 1.0 - 1.0 / (count + 1), count)


def edge_counts(edges: Any, boundaries: Sequence[Any], *, thresholds: int | Sequence[float] = 99,
                tolerance: float = 0.0075) -> np.ndarray:
    """Per-threshold match counts of one image (module docstring).

    Args:
        edges: float (H, W) edge strength in [0, 1].
        boundaries: one or more bool (H, W) ground-truth boundary maps (annotators).
        thresholds: how many BSDS thresholds, or the levels themselves.
        tolerance: matching distance as a fraction of the image diagonal.

    Returns:
        int64 (T, 4): matched target pixels (summed over annotators), target pixels (summed),
        matched predicted pixels, predicted pixels.
    """
    edges = np.asarray(edges, dtype=np.float64)
    boundaries = [np.asarray(b, dtype=bool) for b in boundaries]
    if edges.ndim != 2 or not boundaries or any(b.shape != edges.shape for b in boundaries):
        raise ValueError(f"expected an (H, W) edge map and (H, W) boundary maps of the same size, got {edges.shape} "
                         f"and {[b.shape for b in boundaries]}")
    levels = bsds_thresholds(thresholds) if isinstance(thresholds, (int, np.integer)) else np.asarray(thresholds)
    radius = tolerance * float(np.hypot(*edges.shape))
    target_total = sum(int(b.sum()) for b in boundaries)
    out = np.zeros((len(levels), 4), dtype=np.int64)
    for k, level in enumerate(levels):
        thin = _thin(edges >= level)
        any_match = np.zeros_like(thin)
        found = 0
        for boundary in boundaries:
            matched_p, matched_t = match_pixels(thin, boundary, radius)
            any_match |= matched_p
            found += int(matched_t.sum())
        out[k] = (found, target_total, int(any_match.sum()), int(thin.sum()))
    return out


def _prf(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = np.asarray(counts, dtype=np.float64)
    recall = counts[..., 0] / np.maximum(counts[..., 1], 1)
    precision = counts[..., 2] / np.maximum(counts[..., 3], 1)
    f = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return precision, recall, f


def _best_interpolated(levels: np.ndarray, precision: np.ndarray, recall: np.ndarray) -> tuple[float, ...]:
    """(threshold, precision, recall, F) at the best F, interpolating between neighbouring levels as BSDS."""
    best = (float(levels[0]), float(precision[0]), float(recall[0]), -1.0)
    steps = np.linspace(0, 1, 100)
    for k in range(max(len(levels) - 1, 1)):
        j = min(k + 1, len(levels) - 1)
        p = precision[k] + steps * (precision[j] - precision[k])
        r = recall[k] + steps * (recall[j] - recall[k])
        t = levels[k] + steps * (levels[j] - levels[k])
        f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
        i = int(np.argmax(f))
        if f[i] > best[3]:
            best = (float(t[i]), float(p[i]), float(r[i]), float(f[i]))
    return best


def edge_scores(per_image_counts: Sequence[np.ndarray], levels: np.ndarray) -> dict[str, Any]:
    """ODS, OIS and AP from per-image :func:`edge_counts` (module docstring)."""
    counts = np.stack([np.asarray(c) for c in per_image_counts])  # (I, T, 4)
    precision, recall, _ = _prf(counts.sum(axis=0))
    threshold, ods_p, ods_r, ods = _best_interpolated(levels, precision, recall)
    best = _prf(counts)[2].argmax(axis=1)
    ois_counts = counts[np.arange(len(counts)), best].sum(axis=0)
    ois_p, ois_r, ois = (float(v) for v in _prf(ois_counts))
    order = np.argsort(recall, kind="stable")
    r_sorted, first = np.unique(recall[order], return_index=True)
    p_sorted = precision[order][first]
    grid = np.linspace(0, 1, 101)
    interpolated = np.interp(grid, r_sorted, p_sorted, left=p_sorted[0], right=0.0)
    interpolated[grid > r_sorted[-1]] = 0.0
    area = float(np.sum((interpolated[1:] + interpolated[:-1]) * np.diff(grid)) / 2)  # trapezoids
    return {"ods": ods, "ods_threshold": threshold, "ods_precision": ods_p, "ods_recall": ods_r,
            "ois": ois, "ois_precision": ois_p, "ois_recall": ois_r, "ap": area,
            "curve": {"threshold": levels.tolist(), "precision": precision.tolist(), "recall": recall.tolist()}}


def evaluate_edges(edge_detector: Callable[[np.ndarray], Any], dataset: Any, *, thresholds: int = 99,
                   tolerance: float = 0.0075, progress: Progress | None = None) -> EvaluationResult:
    """ODS / OIS / AP of an edge detector against the dataset's mask boundaries (module docstring).

    Args:
        edge_detector: image (H, W, 3) uint8 -> float (H, W) edge strength in [0, 1], e.g.
            ``SegmentEverything.preset("edges", segmenter).edges``.
        dataset: a :class:`~samkit.eval.CocoDataset` or :class:`~samkit.eval.ArrayDataset`;
            each image's non-crowd masks give its boundary map.
        thresholds: number of BSDS thresholds.
        tolerance: matching distance as a fraction of the image diagonal.
        progress: called with (images done, images total).

    Returns:
        :class:`~samkit.eval.EvaluationResult`; ``metrics``: ``{"ods", "ois", "ap", their precision
        and recall, "ods_threshold", "curve": {"threshold", "precision", "recall"}, "num_images",
        "num_failed_images"}``; per-image records give the image's best F and its threshold.
    """
    if isinstance(thresholds, bool) or not isinstance(thresholds, (int, np.integer)) or thresholds < 1:
        raise ValueError(f"thresholds must be an int >= 1, got {thresholds!r}")
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be a fraction of the diagonal in (0, 1), got {tolerance!r}")
    levels = bsds_thresholds(int(thresholds))
    found: dict[Any, np.ndarray] = {}

    def measure(sample: EvalSample) -> dict[str, Any]:
        edges = np.asarray(edge_detector(sample.image), dtype=np.float64)
        if edges.shape != sample.image.shape[:2]:
            raise ValueError(f"the edge map is {edges.shape}, the image is {sample.image.shape[:2]} (H, W)")
        if not np.isfinite(edges).all() or edges.min() < 0 or edges.max() > 1:
            raise ValueError("the edge map must hold finite values in [0, 1]")
        keep = [i for i, o in enumerate(sample.objects) if not o.iscrowd]
        counts = edge_counts(edges, [mask_boundaries(sample.masks[keep])], thresholds=levels, tolerance=tolerance)
        found[sample.image_id] = counts
        f = _prf(counts)[2]
        return {"best_f": float(f.max()), "best_threshold": float(levels[int(f.argmax())])}

    per_image, problems = run_per_image(dataset, measure, progress)
    ok = [r["image_id"] for r in per_image if not r["error"]]
    if not ok:
        raise ValueError(f"no image of the dataset could be evaluated; first problem: {problems[0] if problems else '-'}")
    metrics = edge_scores([found[i] for i in ok], levels)
    metrics.update(num_images=len(ok), num_failed_images=len(per_image) - len(ok),
                   settings={"thresholds": int(thresholds), "tolerance": tolerance})
    return EvaluationResult("edges", metrics, per_image, problems)
