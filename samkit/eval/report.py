"""Plain-text tables and optional PNG plots of an :class:`~samkit.eval.EvaluationResult`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .result import EvaluationResult

__all__ = ["format_table", "save_plot"]

_AREAS = ("small", "medium", "large")


def _cell(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _rows(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def format_table(result: EvaluationResult) -> str:
    """A fixed-width table of the result's main numbers, as percentages (``-``: no objects)."""
    m = result.metrics
    if result.protocol == "points":
        header = ["clicks", "mIoU", "oracle", *(f"mIoU {a}" for a in _AREAS)]
        rows = [[str(k + 1), _cell(m["miou"][k]), _cell(m["oracle_miou"][k]),
                 *(_cell(m["by_area"][a]["miou"][k]) for a in _AREAS)] for k in range(len(m["miou"]))]
        sizes = ", ".join(f"{m['by_area'][a]['num_objects']} {a}" for a in _AREAS)
        note = f"{m['num_objects']} objects ({sizes})"
    elif result.protocol == "proposals":
        header = ["proposals", "AR", *(f"AR {a}" for a in _AREAS)]
        keys = [k for k in m if k.startswith("AR@")]
        rows = [[k[3:], _cell(m[k]["all"]), *(_cell(m[k][a]) for a in _AREAS)] for k in keys]
        if "by_frequency" in m:
            last = keys[-1]
            rows += [[f"{last[3:]} {g}", _cell(v[last]), "", "", ""] for g, v in m["by_frequency"].items()]
        note = ""
    elif result.protocol == "instances":
        names = ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"]
        header, rows = names, [[_cell(m[n]) for n in names]]
        note = f"{m['num_detections']} masks scored by {m['settings']['score']} score"
    elif result.protocol == "edges":
        header = ["ODS", "OIS", "AP"]
        rows = [[f"{m['ods']:.3f}", f"{m['ois']:.3f}", f"{m['ap']:.3f}"]]
        note = f"ODS at threshold {m['ods_threshold']:.3f}"
    else:
        raise ValueError(f"unknown protocol {result.protocol!r}")
    images = f"{m['num_images']} images" + (f", {m['num_failed_images']} left out" if m["num_failed_images"] else "")
    return _rows(header, rows) + f"\n({images}{'; ' + note if note else ''})"


def save_plot(result: EvaluationResult, path: str | os.PathLike) -> Path | None:
    """mIoU vs clicks (points) or the precision-recall curve (edges) as a PNG.

    Returns:
        The path written, or None when matplotlib is not installed or the protocol has no plot.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    m = result.metrics
    figure = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if result.protocol == "points":
        clicks = list(range(1, len(m["miou"]) + 1))
        for key, label in (("miou", "most confident"), ("oracle_miou", "oracle")):
            axes.plot(clicks, [None if v is None else 100 * v for v in m[key]], marker="o", label=label)
        axes.set(xlabel="clicks", ylabel="mIoU (%)", xticks=clicks, title="point prompts")
    elif result.protocol == "edges":
        axes.plot(m["curve"]["recall"], m["curve"]["precision"], label=f"ODS {m['ods']:.3f}")
        axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1), title="edges")
    else:
        return None
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    return path
