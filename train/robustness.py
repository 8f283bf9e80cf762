"""The robustness report of a held-out evaluation (train/heldout.py): per system, UAR and weighted-F1
against the missing rate, and UAR against the degradation of each store (clean first, as given).

Each point is the mean ± std over fold runs (seeds x folds), each fold run scored on its own
held-out utterances, as Table 2's cells are.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from cmarr.shared.plots import pyplot
from cmarr.train.metrics import METRICS
from cmarr.train.report import mean_std, summarize

SHOWN = ("uar", "f1_weighted")  # the missing-rate figure's two panels


def rate_table(rates: dict[float, list[dict]]) -> dict[float, dict]:
    """Per rate, {metric}_mean and _std (%) over fold runs, and `runs`."""
    table = {}
    for rate, folds in sorted(rates.items()):
        cell = {}
        for metric in METRICS:
            values = 100 * np.array([f[metric] for f in folds], float)
            kept = values[~np.isnan(values)]
            cell[f"{metric}_mean"] = float(kept.mean()) if len(kept) else math.nan
            cell[f"{metric}_std"] = float(kept.std()) if len(kept) else math.nan
        cell["runs"] = len(folds)
        table[rate] = cell
    return table


def write_missing_rates(folder: Path, evaluated: list, seed: int) -> None:
    """missing_rates.json / .csv / .md / .png in `folder` for the systems `evaluated` (heldout.Evaluated)."""
    tables = {e.system: rate_table(e.rates) for e in evaluated}
    (folder / "missing_rates.json").write_text(json.dumps({"seed": seed, "systems": tables}, indent=1))
    with open(folder / "missing_rates.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["system", "rate", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), "runs"])
        for system, table in tables.items():
            for rate, t in table.items():
                cells = [f"{t[f'{m}_{s}']:.4f}" for m in METRICS for s in ("mean", "std")]
                w.writerow([system, rate, *cells, t["runs"]])
    rates = sorted({r for t in tables.values() for r in t})
    lines = [
        "# UAR / weighted-F1 (%) against the missing rate, mean ± std over fold runs\n",
        "Each modality of each held-out utterance is dropped independently at the rate, at least one kept "
        f"(seed {seed}).\n",
        "| rate | " + " | ".join(tables) + " |",
        "|---" * (len(tables) + 1) + "|",
    ]
    for r in rates:
        cells = [_pair(tables[s].get(r), ("uar", "f1_weighted")) for s in tables]
        lines.append(f"| {r:g} | " + " | ".join(cells) + " |")
    (folder / "missing_rates.md").write_text("\n".join(lines) + "\n")
    _rate_figure(folder / "missing_rates.png", tables)


def _pair(t: dict | None, metrics) -> str:
    return " / ".join(mean_std(t, m, "±") for m in metrics) if t else "-"


def _rate_figure(path: Path, tables: dict[str, dict]) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(SHOWN), figsize=(5 * len(SHOWN), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], SHOWN):
        for system, table in tables.items():
            x = list(table)
            mean = [table[r][f"{metric}_mean"] for r in x]
            std = [table[r][f"{metric}_std"] for r in x]
            ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=system)
        ax.set_xlabel("missing rate")
        ax.set_ylabel(f"{'UAR' if metric == 'uar' else 'weighted-F1'} (%)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_robustness(out: Path, evaluated: dict[str, list], rates) -> None:
    """robustness.md and robustness.png in `out`: per system, UAR under {s,v,t} and Avg. per store
    (`evaluated`: store label -> heldout.Evaluated per system), and UAR against the missing rate on
    the first store."""
    out.mkdir(parents=True, exist_ok=True)
    labels = list(evaluated)
    tables = {label: {e.system: summarize(e.per_fold) for e in done} for label, done in evaluated.items()}
    systems = list(dict.fromkeys(s for t in tables.values() for s in t))
    lines = ["# Robustness: UAR (%) per store, held-out, mean ± std over fold runs\n"]
    for row in ("{s,v,t}", "Avg."):
        lines += [f"## {row}\n", "| system | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for s in systems:
            cells = [mean_std(tables[label][s][row], "uar", "±") if s in tables[label] else "-" for label in labels]
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append("")
    if rates:
        lines += ["Missing rates: missing_rates.md (.csv, .png) in each store's folder (figure: the first).", ""]
    (out / "robustness.md").write_text("\n".join(lines))
    first = {e.system: rate_table(e.rates) for e in evaluated[labels[0]]} if rates else {}
    _robustness_figure(out / "robustness.png", labels, tables, systems, first)


def _robustness_figure(path: Path, labels: list[str], tables: dict, systems: list[str], rates: dict) -> None:
    plt = pyplot()
    panels = 2 if rates else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8), squeeze=False)
    ax = axes[0][0]
    x = np.arange(len(labels))
    for s in systems:
        cells = [tables[label].get(s, {}).get("{s,v,t}") for label in labels]
        mean = [c["uar_mean"] if c else math.nan for c in cells]
        std = [c["uar_std"] if c else math.nan for c in cells]
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=s)
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("UAR {s,v,t} (%)")
    ax.set_title("degraded inputs", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if rates:
        ax = axes[0][1]
        for s, table in rates.items():
            r = list(table)
            ax.errorbar(r, [table[v]["uar_mean"] for v in r], yerr=[table[v]["uar_std"] for v in r], marker="o",
                        capsize=3, label=s)  # fmt: skip
        ax.set_xlabel("missing rate")
        ax.set_ylabel("UAR (%)")
        ax.set_title(f"missing modalities ({labels[0]})", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
