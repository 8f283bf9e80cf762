"""Results in the shape of the paper's Table 2: rows {t}, {s}, {v}, {v,t}, {s,v}, {s,t}, Avg., {s,v,t};
cells WAR / UAR as mean +- std over folds (and seeds). Written as JSON, CSV, Markdown and PNGs.

A condition with no test utterance in a fold (a session without video, say) has no score there:
it is left out of that condition's mean, and a condition with no utterance in any fold reads "n/a".
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from cmarr.train.metrics import confusion, war_uar
from cmarr.train.missing import FULL, MISSING
from cmarr.train.paper import reference
from cmarr.train.rundir import RunDir

CONDITIONS = [c.name for c in MISSING] + [FULL.name]
ROWS = [c.name for c in MISSING] + ["Avg.", FULL.name]


def fold_metrics(fold_results: list[dict], labels: np.ndarray, n_classes: int) -> dict[str, dict]:
    """Join the test parts of a fold's splits and score each condition on the union."""
    out = {}
    for name in CONDITIONS:
        ids = np.concatenate([np.asarray(r["test"][name]["ids"], int) for r in fold_results])
        pred = np.concatenate([np.asarray(r["test"][name]["pred"], int) for r in fold_results])
        war, uar = war_uar(labels[ids], pred)
        cm = confusion(labels[ids], pred, n_classes) if len(ids) else np.zeros((n_classes, n_classes), int).tolist()
        out[name] = {"war": war, "uar": uar, "n": int(len(ids)), "confusion": cm}
    out["Avg."] = {k: _mean([out[c.name][k] for c in MISSING]) for k in ("war", "uar")}
    return out


def _mean(values: list[float]) -> float:
    """Mean of the values that exist (NaN: a condition with no test utterance)."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def summarize(per_fold: list[dict]) -> dict[str, dict]:
    """Mean and std (over folds x seeds) of WAR and UAR per row, in percent; NaN where no fold scored.
    `runs`: how many fold runs a row's mean is over (fewer than all where some had no test utterance)."""
    table = {}
    for row in ROWS:
        cell = {}
        for metric in ("war", "uar"):
            values = 100 * np.array([f["metrics"][row][metric] for f in per_fold], dtype=float)
            kept = values[~np.isnan(values)]
            cell[f"{metric}_mean"] = float(kept.mean()) if len(kept) else float("nan")
            cell[f"{metric}_std"] = float(kept.std()) if len(kept) else float("nan")
        cell["runs"] = int(len(kept))
        table[row] = cell
    return table


def coverage_note(table: dict, n_runs: int) -> str | None:
    """A line for the report when some rows are means over fewer fold runs than the others (a fold
    whose test part has no utterance with a modality), else None."""
    partial = [row for row in ROWS if 0 < table[row]["runs"] < n_runs and row != "Avg."]
    if not partial:
        return None
    counts = ", ".join(f"{row} {table[row]['runs']}" for row in partial)
    return (
        f"rows over fewer than the {n_runs} fold runs (the others have no test utterance with those "
        f"modalities): {counts}; Avg. averages, in each fold run, the missing conditions scored there"
    )


def mean_std(t: dict, metric: str, plus: str = " +- ") -> str:
    """'mean +- std' of `metric` ('war' or 'uar', %) of a table cell; the mean alone over one fold
    run (a single value has no spread; '+- 0.00' would read as a measured one); 'n/a' for a
    condition with no test utterance in any fold."""
    if math.isnan(t[f"{metric}_mean"]):
        return "n/a"
    if t.get("runs") == 1:
        return f"{t[f'{metric}_mean']:.2f}"
    return f"{t[f'{metric}_mean']:.2f}{plus}{t[f'{metric}_std']:.2f}"


def format_cell(t: dict) -> str:
    if math.isnan(t["war_mean"]):
        return "n/a"
    return f"{mean_std(t, 'war')} / {mean_std(t, 'uar')}"


def markdown(table: dict, title: str, n_runs: int, paper: dict, corpus: str = "", notes: list[str] = ()) -> str:
    """`paper`: the paper's (WAR, UAR) per row for this system and corpus ({} for none)."""
    head = f"| Avail. | WAR / UAR (mean +- std over {n_runs} fold runs) |" + (f" paper ({corpus}) |" if paper else "")
    lines = [f"# {title}\n", head, "|---|---|" + ("---|" if paper else "")]
    for row in ROWS:
        ref = (f" {paper[row][0]:.2f} / {paper[row][1]:.2f} |" if row in paper else " - |") if paper else ""
        lines.append(f"| {row} | {format_cell(table[row])} |{ref}")
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def write_reports(
    run_dir: Path,
    table: dict,
    per_fold: list[dict],
    classes: list[str],
    title: str,
    corpus: str,
    system=None,
    warnings: list[str] = (),
) -> None:
    n_runs = len(per_fold)
    header = {"system": system.name, "title": system.title, "options": system.options} if system else {}
    body = {**header, "table": table, "folds": per_fold, "classes": classes, "warnings": list(warnings)}
    run = RunDir(run_dir)
    run.results("json").write_text(json.dumps(body, indent=1))
    with open(run.results("csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["condition", "war_mean", "war_std", "uar_mean", "uar_std"])
        for row in ROWS:
            t = table[row]
            w.writerow([row] + [f"{t[k]:.4f}" for k in ("war_mean", "war_std", "uar_mean", "uar_std")])
    notes = list(warnings)
    if note := coverage_note(table, n_runs):
        notes.insert(0, note)
    if system:
        stages = " -> ".join(s.name for s in system.stages)
        options = ", ".join(f"{k} {v}" for k, v in system.options.items())
        notes.insert(0, f"system {system.name}: stages {stages}" + (f"; options: {options}" if options else ""))
    paper = reference(corpus, system.name) if system else {}
    run.results("md").write_text(markdown(table, title, n_runs, paper, corpus, notes))
    _confusion_pngs(run.confusion, per_fold, classes)


def _confusion_pngs(folder: Path, per_fold: list[dict], classes: list[str]) -> None:
    from cmarr.shared.plots import plot_confusion

    folder.mkdir(exist_ok=True)
    for row in CONDITIONS:
        cm = np.sum([np.array(f["metrics"][row]["confusion"]) for f in per_fold], axis=0)
        runs = f"{len(per_fold)} fold runs" if len(per_fold) > 1 else "1 fold run"
        title = f"available {row}\n{int(cm.sum())} test utterances of {runs}"
        plot_confusion(cm, classes, title, folder / f"{row.strip('{}').replace(',', '')}.png")
