"""``newsdrift plot``: a PNG timeline of a story's observations per outlet."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import NewsdriftError
from pipeline.models import Observation

SCALES = ((1e12, "tn"), (1e9, "bn"), (1e6, "m"), (1e3, "k"))


def _scale(values: Sequence[float]) -> tuple[float, str]:
    top = max((abs(v) for v in values), default=0.0)
    for factor, label in SCALES:
        if top >= factor:
            return factor, label
    return 1.0, ""


def plot_story(observations: Sequence[Observation], *, title: str, path: Path) -> Path:
    """One panel per (metric, unit); each outlet a series; intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple[str, str], list[Observation]] = {}
    for o in observations:
        panels.setdefault((o.metric, o.unit), []).append(o)
    keys = sorted(panels)
    fig, axes = plt.subplots(len(keys), 1, figsize=(9, 3.2 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=True):
        obs = panels[key]
        factor, label = _scale([o.value for o in obs])
        for outlet in sorted({o.outlet for o in obs}):
            series = sorted((o for o in obs if o.outlet == outlet), key=lambda o: o.observed_at)
            ys = [o.value / factor for o in series]
            lower = [max(0.0, (o.value - o.low) / factor) for o in series]
            upper = [
                0.0 if math.isinf(o.high) else max(0.0, (o.high - o.value) / factor) for o in series
            ]
            ax.errorbar(
                [o.observed_at for o in series],
                ys,
                yerr=[lower, upper],
                marker="o",
                capsize=4,
                label=outlet,
            )
            for o, y in zip(series, ys, strict=True):
                if math.isinf(o.high):
                    ax.annotate("↑", (o.observed_at, y), textcoords="offset points", xytext=(0, 6))
        metric, unit = key
        ax.set_title(f"{metric} ({unit})")
        ax.set_ylabel(f"{label} {unit}".strip())
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title, fontsize="medium")
    fig.autofmt_xdate()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise NewsdriftError(f"cannot write {path}: {e.strerror}") from e
    finally:
        plt.close(fig)
    return path
