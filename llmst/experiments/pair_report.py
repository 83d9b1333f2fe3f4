"""The reports of the pair experiments as markdown and pictures: `augsbert` (mean Spearman per variant over
seeds with 95% t-intervals, the paired difference to gold-only) and `transencoder` (Spearman per cycle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmst.experiments.w2s_report import format_interval as _interval
from llmst.experiments.w2s_report import format_value as _value
from llmst.filter.plots import _pyplot


def augsbert_markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    splits = list(report["teacher"])
    student = config["student"].get("student", "minilm-l6")
    teacher = config["teacher"].get("student", "minilm-l6")
    lines = [
        f"Augmented SBERT, {len(config['seeds'])} seed(s) {config['seeds']}: bi-encoder {student}, cross-encoder "
        f"teacher from {teacher}. Spearman x 100; 95% t-intervals over seeds. The seeds vary the bi-encoder "
        "students only (head, data order, dropout): the teacher, the sampled pairs and the silver sets are the "
        "same for every seed.",
        "",
    ]
    gold = report.get("gold")
    if gold:
        also = ", ".join(f"{gold[k]} in {k[5:]}" for k in gold if k.startswith("also_"))
        lines += [
            f"Gold train pairs: {gold['kept']} of {gold['train']} trained on; {gold['dropped']} dropped as "
            f"dev or test pairs ({also}; see data/train.rejects.jsonl).",
            "",
        ]
    lines += [
        "| model | silver pairs | seeds | " + " | ".join(f"{s} Spearman | {s} 95% CI" for s in splits) + " |",
        "|---|---|---|" + "---|---|" * len(splits),
    ]
    for name, label in (("teacher", "cross-encoder teacher"), ("start", f"{student} (start)")):
        cells = [f"{_value(report[name][s])} | " for s in splits]
        lines.append(f"| {label} | | 1 | " + " | ".join(cells) + " |")
    for name, summary in report["variants"].items():
        silver = report["silver"].get(name)
        described = f"{silver['pairs']} ({'+'.join(silver['methods'])})" if silver else "0"
        cells = [f"{_value(summary['mean'][s])} | {_interval(summary['ci'][s])}" for s in splits]
        lines.append(
            f"| **{name}** | {described} | {len(summary['per_seed'][splits[0]])} | "
            + " | ".join(cells)
            + " |"
        )
    for name, diff in report["versus_gold"].items():
        cells = [f"{diff[s]['mean']:+.2f} | {_interval(diff[s]['ci'])}" for s in splits]
        lines.append(
            f"| {name} - gold (paired by seed) | | {len(diff[splits[0]]['per_seed'])} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot_augsbert(report: dict[str, Any], path: Path) -> None:
    """Test (else dev) Spearman per variant: each seed a dot, the mean with its interval; teacher and start
    model as lines."""
    plt = _pyplot()
    split = "test" if "test" in report["teacher"] else next(iter(report["teacher"]))
    fig, ax = plt.subplots(figsize=(6, 3.8))
    names = list(report["variants"])
    for x, name in enumerate(names):
        summary = report["variants"][name]
        values = summary["per_seed"][split]
        ax.scatter([x - 0.12] * len(values), values, color=f"C{x}", alpha=0.5, s=14)
        mean, ci = summary["mean"][split], summary["ci"][split]
        error = None if ci is None else [[mean - ci[0]], [ci[1] - mean]]
        ax.errorbar(x + 0.12, mean, yerr=error, fmt="o", color=f"C{x}", capsize=4)
    ax.axhline(
        report["teacher"][split], color="black", linestyle="--", linewidth=1, label="cross-encoder teacher"
    )
    ax.axhline(report["start"][split], color="grey", linestyle=":", linewidth=1, label="start bi-encoder")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(f"{split} Spearman x 100")
    ax.set_title("Augmented SBERT: seeds (dots), mean and 95% CI")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def transencoder_markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    splits = sorted({s for scores in report["start"].values() for s in scores}, key=["dev", "test"].index)
    mutual = " (mutual distillation)" if len(report["chains"]) > 1 else ""
    lines = [
        f"Trans-Encoder{mutual}, {config['cycles']} cycle(s) on {report['pairs']['pairs']} unlabeled pairs, "
        f"init {config['init']}. Spearman x 100 on the gold pairs.",
        "",
    ]
    if not splits:
        lines.append("(no dev or test file: no metrics)")
        return "\n".join(lines) + "\n"
    header = " | ".join([f"bi {s}" for s in splits] + [f"cross {s}" for s in splits])
    lines += [f"| cycle | pairs scored by | chain | {header} |", "|---|---|---|" + "---|" * 2 * len(splits)]
    for name, scores in report["start"].items():
        cells = [_value(scores.get(s)) for s in splits] + [""] * len(splits)
        lines.append(f"| 0 (start) | | {name} | " + " | ".join(cells) + " |")
    for entry in report["cycles"]:
        for name in report["chains"]:
            cells = [_value(entry["bi"][name].get(s)) for s in splits]
            cells += [_value(entry["cross"][name].get(s)) for s in splits]
            lines.append(f"| {entry['cycle']} | {entry['teacher']} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_transencoder(report: dict[str, Any], path: Path) -> None:
    """Spearman per cycle: the bi-encoder (from the start model at cycle 0) and the cross-encoder, per chain,
    test solid, dev dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    cycles = [entry["cycle"] for entry in report["cycles"]]
    plotted = False
    for k, name in enumerate(report["chains"]):
        for split, style in (("test", "-"), ("dev", "--")):
            if split not in report["start"][name]:
                continue
            bi = [report["start"][name][split]] + [e["bi"][name][split] for e in report["cycles"]]
            cross = [e["cross"][name][split] for e in report["cycles"]]
            ax.plot([0, *cycles], bi, style, marker="o", color=f"C{2 * k}", label=f"bi {name} ({split})")
            ax.plot(cycles, cross, style, marker="s", color=f"C{2 * k + 1}", label=f"cross {name} ({split})")
            plotted = True
    if plotted:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no dev or test file: no metrics", ha="center", transform=ax.transAxes)
    ax.set_xticks([0, *cycles])
    ax.set_xlabel("cycle (0: start model)")
    ax.set_ylabel("Spearman x 100")
    ax.set_title("Trans-Encoder")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
