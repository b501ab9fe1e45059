"""``newsdrift plot``: a PNG timeline of a story's observations per outlet."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import NewsdriftError
from pipeline.models import Observation, display_scale


@dataclass(frozen=True)
class Series:
    """One line of a panel: an outlet's observations of one claim, oldest first."""

    outlet: str
    claim: tuple[str, str]  # (subject, period), "" where none
    observations: tuple[Observation, ...]


def panels_of(observations: Sequence[Observation]) -> dict[tuple[str, str], list[Series]]:
    """The panels of a story's plot, per (metric, unit): a series per outlet and claim, so
    a line follows one figure through an outlet's versions and never joins two figures (a
    deal's price and an earlier deal's, this year's revenue and last year's)."""
    grouped: dict[tuple[str, str], dict[tuple[str, tuple[str, str]], list[Observation]]] = {}
    for o in observations:
        claim = (o.subject or "", o.period or "")
        grouped.setdefault((o.metric, o.unit), {}).setdefault((o.outlet, claim), []).append(o)
    return {
        key: [
            Series(outlet, claim, tuple(sorted(obs, key=lambda o: o.observed_at)))
            for (outlet, claim), obs in sorted(series.items())
        ]
        for key, series in sorted(grouped.items())
    }


def plot_story(observations: Sequence[Observation], *, title: str, path: Path) -> Path:
    """One panel per (metric, unit) and a line per outlet and claim (``panels_of``); an
    outlet keeps its colour in every panel, a claim its marker. Intervals are error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = panels_of(observations)
    outlets = sorted({o.outlet for o in observations})
    colours = {name: f"C{i % 10}" for i, name in enumerate(outlets)}
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(9, 3.2 * len(panels)), squeeze=False, layout="constrained"
    )
    for ax, ((metric, unit), lines) in zip(axes[:, 0], panels.items(), strict=True):
        factor, label = display_scale(
            max((abs(o.value) for line in lines for o in line.observations), default=0.0)
        )
        claims = sorted({line.claim for line in lines})
        for line in lines:
            series = line.observations
            ys = [o.value / factor for o in series]
            lower = [max(0.0, (o.value - o.low) / factor) for o in series]
            upper = [
                0.0 if math.isinf(o.high) else max(0.0, (o.high - o.value) / factor) for o in series
            ]
            about = " · ".join(filter(None, line.claim)) or "-"
            ax.errorbar(
                [o.observed_at for o in series],
                ys,
                yerr=[lower, upper],
                marker=MARKERS[claims.index(line.claim) % len(MARKERS)],
                color=colours[line.outlet],
                capsize=4,
                label=line.outlet if len(claims) == 1 else f"{line.outlet}: {about}",
            )
            for o, y in zip(series, ys, strict=True):
                if math.isinf(o.high):
                    ax.annotate("↑", (o.observed_at, y), textcoords="offset points", xytext=(0, 6))
        ax.set_title(f"{metric} ({unit})")
        ax.set_ylabel(f"{label} {unit}".strip())
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title, fontsize="medium")
    fig.autofmt_xdate()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise NewsdriftError(f"cannot write {path}: {e.strerror}") from e
    finally:
        plt.close(fig)
    return path


MARKERS = ("o", "s", "^", "D", "v", "P", "X")
