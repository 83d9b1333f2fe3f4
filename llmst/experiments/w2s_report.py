"""The w2s report as markdown and as a picture (PGR per seed with its interval; weak / transfer / ceiling)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def format_value(value: float | None) -> str:
    """A PGR or metric to 3 decimals; None (PGR undefined: no gap to recover) as `undefined`."""
    return "undefined" if value is None else f"{value:.3f}"


def format_interval(value: list[float] | None) -> str:
    """A 95% interval as `[lo, hi]`; empty when there is none."""
    return "" if value is None else f"[{value[0]:.3f}, {value[1]:.3f}]"


def report_markdown(report: dict[str, Any]) -> str:
    """One table row per transfer variant (pooled over seeds), then one per seed of each variant."""
    seeds = report["config"]["seeds"]
    lines = [
        f"Weak-to-strong, {len(seeds)} seed(s) {seeds}, {report['n_test']} test rows. PGR = (transfer - weak) / "
        "(ceiling - weak); 95% paired bootstrap intervals (rows, and seeds for the pooled rows).",
        "",
        "| variant | seed | weak acc | transfer acc | ceiling acc | PGR (acc) | 95% CI | weak AUC | "
        "transfer AUC | ceiling AUC | PGR (AUC) | 95% CI |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(name: str, seed: str, entry: dict[str, Any]) -> str:
        cells = [name, seed]
        for metric in ("accuracy", "auroc"):
            cells += [f"{entry[role][metric]:.4f}" for role in ("weak", "transfer", "ceiling")]
            cells += [format_value(entry["pgr"][metric]), format_interval(entry["pgr"][f"{metric}_ci"])]
        return "| " + " | ".join(cells) + " |"

    for name, summary in report["variants"].items():
        lines.append(row(f"**{name}**", "all", summary["mean"]))
    for name, summary in report["variants"].items():
        for seed, entry in zip(seeds, summary["seeds"], strict=True):
            lines.append(row(name, str(seed), entry))
    versus = report.get(f"versus_{report['primary']}") or {}
    if versus:
        lines += ["", f"PGR difference against {report['primary']} (same seeds and rows, paired):", ""]
        lines += [
            "| variant | ΔPGR (acc) | 95% CI | ΔPGR (AUC) | 95% CI | Δtransfer acc | 95% CI |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, diff in versus.items():
            transfer = diff["transfer"]
            cells = [
                format_value(diff["accuracy"]),
                format_interval(diff["accuracy_ci"]),
                format_value(diff["auroc"]),
                format_interval(diff["auroc_ci"]),
                format_value(transfer["accuracy"]),
                format_interval(transfer["accuracy_ci"]),
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_pgr(report: dict[str, Any], path: Path) -> None:
    """Left: accuracy PGR per seed (and pooled) with intervals, per variant. Right: mean accuracies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(report["variants"])
    seeds = report["config"]["seeds"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / max(len(variants), 1)
    undefined = set()  # x positions (seeds, pooled) whose PGR is undefined
    for k, name in enumerate(variants):
        entries = [*report["variants"][name]["seeds"], report["variants"][name]["mean"]]
        labeled = False
        for x, entry in enumerate(entries):
            value, ci = entry["pgr"]["accuracy"], entry["pgr"]["accuracy_ci"]
            if value is None:
                undefined.add(x)
                continue
            position = x + (k - (len(variants) - 1) / 2) * width
            error = None if ci is None else [[value - ci[0]], [ci[1] - value]]
            left.errorbar(
                position,
                value,
                yerr=error,
                fmt="o",
                color=f"C{k}",
                capsize=3,
                label=None if labeled else name,
            )
            labeled = True
    left.axhline(0, color="grey", linewidth=0.8)
    left.axhline(1, color="grey", linewidth=0.8, linestyle="--")
    left.set_xticks(range(len(seeds) + 1), [f"seed {s}" for s in seeds] + ["pooled"], fontsize=8)
    left.set_ylabel("PGR (accuracy)")
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=8)
        for x in sorted(undefined):  # a blank column would read as a missing run
            left.text(
                x,
                0.5,
                "undefined (gap < min_gap)",
                ha="center",
                va="center",
                rotation=90,
                fontsize=7,
                color="grey",
                transform=left.get_xaxis_transform(),
            )
    else:  # every PGR undefined (ceiling within min_gap of weak): say so instead of an empty panel
        left.text(0.5, 0.5, "PGR undefined: ceiling - weak < min_gap", ha="center", transform=left.transAxes)
    left.set_title("Performance gap recovered")
    roles = ("weak", "transfer", "ceiling")
    for k, name in enumerate(variants):
        mean = report["variants"][name]["mean"]
        positions = [r + (k - (len(variants) - 1) / 2) * width for r in range(len(roles))]
        right.bar(positions, [mean[r]["accuracy"] for r in roles], width=width, color=f"C{k}", label=name)
    right.set_xticks(range(len(roles)), roles)
    lows = [report["variants"][n]["mean"]["weak"]["accuracy"] for n in variants]
    right.set_ylim(max(0.0, min(lows) - 0.1), 1.0)
    right.set_ylabel("test accuracy (mean over seeds)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
