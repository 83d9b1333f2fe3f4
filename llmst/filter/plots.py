"""PNG plots of the filter report (matplotlib, Agg backend, imported on use)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_class_counts(
    before: dict[str, int],
    after: dict[str, int],
    path: Path,
    *,
    target: dict[str, float] | None = None,
    title: str = "Records per class",
) -> None:
    """Grouped bars: records per predicted class before and after filtering; optional target shares."""
    plt = _pyplot()
    names = list(before)
    positions = range(len(names))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(names) + 2), 4))
    ax.bar(
        [p - 0.2 for p in positions], [before[n] for n in names], width=0.4, label="before", color="#B0B0B0"
    )
    ax.bar([p + 0.2 for p in positions], [after[n] for n in names], width=0.4, label="kept", color="#4C72B0")
    if target is not None:
        kept = sum(after.values())
        ax.scatter(
            [p + 0.2 for p in positions],
            [target[n] * kept for n in names],
            marker="_",
            s=400,
            color="#C44E52",
            label="target share",
            zorder=3,
        )
    ax.set_xticks(list(positions))
    ax.set_xticklabels(
        names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center"
    )
    ax.set_ylabel("records")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def plot_precision_coverage(
    path: Path,
    *,
    pool: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    title: str = "Precision vs coverage",
) -> None:
    """Precision of the most trusted fraction vs that fraction, with the chosen operating point marked.

    Each curve is `{"points": [{"coverage", "precision", ["lower_bound"]}], "operating_point": {...},
    ["target"]}`; `pool` is measured on LABELED's own gold field, `calibration` on the calibration set.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for curve, label, color in (
        (calibration, "calibration", "#4C72B0"),
        (pool, "gold in LABELED", "#55A868"),
    ):
        if curve is None:
            continue
        points = sorted(curve["points"], key=lambda p: p["coverage"])
        ax.plot([p["coverage"] for p in points], [p["precision"] for p in points], color=color, label=label)
        if points and "lower_bound" in points[0]:
            ax.plot(
                [p["coverage"] for p in points],
                [p["lower_bound"] for p in points],
                color=color,
                linestyle=":",
                label=f"{label}: certified lower bound",
            )
        point = curve.get("operating_point")
        if point and point.get("precision") is not None:
            ax.scatter(
                [point["coverage"]],
                [point["precision"]],
                marker="*",
                s=180,
                color=color,
                edgecolor="black",
                zorder=4,
                label=f"{label}: chosen ({point['coverage']:.2f}, {point['precision']:.3f})",
            )
        if curve.get("target") is not None:
            ax.axhline(curve["target"], color="#C44E52", linestyle="--", label="target precision")
    ax.set_xlabel("coverage (fraction kept)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
