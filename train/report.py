"""Results in the shape of the paper's Table 2: rows {t}, {s}, {v}, {v,t}, {s,v}, {s,t}, Avg., {s,v,t};
cells WAR / UAR as mean +- std over folds (and seeds). Written as JSON, CSV, Markdown and PNGs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from cmarr.train.conditions import FULL, MISSING
from cmarr.train.metrics import confusion, war_uar

PAPER_IEMOCAP = {
    "{t}": (69.74, 70.92),
    "{s}": (74.15, 75.38),
    "{v}": (54.06, 52.42),
    "{v,t}": (73.04, 74.09),
    "{s,v}": (75.51, 76.38),
    "{s,t}": (78.95, 79.70),
    "Avg.": (70.90, 71.48),
    "{s,v,t}": (79.86, 81.06),
}
ROWS = [c.name for c in MISSING] + ["Avg.", FULL.name]


def fold_metrics(fold_results: list[dict], labels: np.ndarray, n_classes: int) -> dict[str, dict]:
    """Join the test parts of a fold's splits and score each condition on the union."""
    out = {}
    for name in [c.name for c in MISSING] + [FULL.name]:
        ids = np.concatenate([np.asarray(r["test"][name]["ids"], int) for r in fold_results])
        pred = np.concatenate([np.asarray(r["test"][name]["pred"], int) for r in fold_results])
        war, uar = war_uar(labels[ids], pred)
        out[name] = {"war": war, "uar": uar, "n": int(len(ids)), "confusion": confusion(labels[ids], pred, n_classes)}
    out["Avg."] = {k: float(np.mean([out[c.name][k] for c in MISSING])) for k in ("war", "uar")}
    return out


def summarize(per_fold: list[dict]) -> dict[str, dict]:
    """Mean and std (over folds x seeds) of WAR and UAR per row, in percent."""
    table = {}
    for row in ROWS:
        war = 100 * np.array([f["metrics"][row]["war"] for f in per_fold])
        uar = 100 * np.array([f["metrics"][row]["uar"] for f in per_fold])
        table[row] = {
            "war_mean": float(np.nanmean(war)),
            "war_std": float(np.nanstd(war)),
            "uar_mean": float(np.nanmean(uar)),
            "uar_std": float(np.nanstd(uar)),
        }
    return table


def markdown(table: dict, title: str, n_runs: int, paper: bool) -> str:
    head = (
        "| Avail. | WAR / UAR (mean +- std over " + f"{n_runs} fold runs) |" + (" paper (IEMOCAP) |" if paper else "")
    )
    lines = [f"# {title}\n", head, "|---|---|" + ("---|" if paper else "")]
    for row in ROWS:
        t = table[row]
        cell = f"{t['war_mean']:.2f} +- {t['war_std']:.2f} / {t['uar_mean']:.2f} +- {t['uar_std']:.2f}"
        ref = f" {PAPER_IEMOCAP[row][0]:.2f} / {PAPER_IEMOCAP[row][1]:.2f} |" if paper else ""
        lines.append(f"| {row} | {cell} |{ref}")
    return "\n".join(lines) + "\n"


def write_reports(
    run_dir: Path, table: dict, per_fold: list[dict], classes: list[str], title: str, corpus: str
) -> None:
    n_runs = len(per_fold)
    (run_dir / "results.json").write_text(json.dumps({"table": table, "folds": per_fold, "classes": classes}, indent=1))
    with open(run_dir / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["condition", "war_mean", "war_std", "uar_mean", "uar_std"])
        for row in ROWS:
            t = table[row]
            w.writerow([row] + [f"{t[k]:.4f}" for k in ("war_mean", "war_std", "uar_mean", "uar_std")])
    (run_dir / "results.md").write_text(markdown(table, title, n_runs, corpus == "iemocap"))
    _confusion_pngs(run_dir / "confusion", per_fold, classes)


def _confusion_pngs(folder: Path, per_fold: list[dict], classes: list[str]) -> None:
    from cmarr.shared.plots import plot_confusion

    folder.mkdir(exist_ok=True)
    for row in [c.name for c in MISSING] + [FULL.name]:
        cm = np.sum([np.array(f["metrics"][row]["confusion"]) for f in per_fold], axis=0)
        plot_confusion(cm, classes, f"available {row}", folder / f"{row.strip('{}').replace(',', '')}.png")
