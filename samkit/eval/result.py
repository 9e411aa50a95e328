"""The result of an evaluation protocol and the per-image loop every protocol shares."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from samkit.formats.jsonable import to_python

from .dataset import EvalSample, SampleError

__all__ = ["EvaluationResult", "Progress", "run_per_image"]

logger = logging.getLogger(__name__)

#: Called with (images done, images total) after each image.
Progress = Callable[[int, int], None]


@dataclass
class EvaluationResult:
    """What a protocol measured.

    Attributes:
        protocol: ``"points"``, ``"proposals"``, ``"instances"`` or ``"edges"``.
        metrics: the dataset-level numbers (see each protocol).
        per_image: one record per image, in the dataset's order, with ``image_id``, its objects
            and ``error`` (None, or why the image was left out).
        problems: messages about input left out (failed images, orphan annotations).
    """

    protocol: str
    metrics: dict[str, Any]
    per_image: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def failed_images(self) -> list[Any]:
        """Ids of the images that could not be evaluated."""
        return [r["image_id"] for r in self.per_image if r.get("error")]

    def to_dict(self, *, model: str = "", dataset: str = "") -> dict[str, Any]:
        """``{"protocol", "model", "dataset", "metrics", "per_image", "problems"}``, JSON-ready."""
        return to_python({"protocol": self.protocol, "model": model, "dataset": dataset, "metrics": self.metrics,
                          "per_image": self.per_image, "problems": self.problems})


def run_per_image(dataset: Any, measure: Callable[[EvalSample], dict[str, Any]],
                  progress: Progress | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Load each image of ``dataset`` and ``measure`` it; one failing image does not stop the rest.

    Args:
        dataset: a :class:`~samkit.eval.CocoDataset` or :class:`~samkit.eval.ArrayDataset`.
        measure: sample -> the fields of its record (e.g. ``{"objects": [...]}``). A
            ``ValueError`` it raises (a :class:`SampleError` included) marks the image failed;
            it should keep its results to itself until it returns.
        progress: called with (images done, images total) after each image.

    Returns:
        ``(records, problems)``: one ``{"image_id", "file_name", "error", **fields}`` per image
        (``error`` None or the reason), and the messages of failed images and dataset warnings.
    """
    records: list[dict[str, Any]] = []
    problems = list(getattr(dataset, "warnings", []))
    total = len(dataset.images)
    for done, info in enumerate(dataset.images, start=1):
        record: dict[str, Any] = {"image_id": info["id"], "file_name": info.get("file_name", ""), "error": None}
        records.append(record)
        try:
            sample = dataset.load(info)
            record["file_name"] = sample.file_name or record["file_name"]
            record.update(measure(sample))
        except ValueError as error:
            message = str(error) if isinstance(error, SampleError) else f"image {info['id']!r}: {error}"
            record["error"] = message
            problems.append(message)
            logger.warning("left out %s", message)
        if progress is not None:
            progress(done, total)
    return records, problems
