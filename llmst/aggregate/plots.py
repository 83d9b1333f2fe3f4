"""PNG plots of the aggregate report (matplotlib, Agg backend, imported on use)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmst.filter.plots import _pyplot


def plot_source_accuracy(sources: dict[str, dict[str, Any]], path: Path, *, title: str = "Sources") -> None:
    """Bars: each source's estimated accuracy and, when gold exists, its accuracy against gold."""
    plt = _pyplot()
    names = list(sources)
    positions = range(len(names))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(names) + 2), 4))
    estimated = [sources[n].get("estimated_accuracy") or 0.0 for n in names]
    ax.bar([p - 0.2 for p in positions], estimated, width=0.4, label="estimated accuracy", color="#4C72B0")
    if any("gold_accuracy" in sources[n] for n in names):
        gold = [sources[n].get("gold_accuracy", 0.0) for n in names]
        ax.bar([p + 0.2 for p in positions], gold, width=0.4, label="gold accuracy", color="#55A868")
    ax.set_xticks(list(positions))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
