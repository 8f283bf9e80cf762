"""Results in the shape of the paper's Table 2: rows {t}, {s}, {v}, {v,t}, {s,v}, {s,t}, Avg., {s,v,t};
cells WAR / UAR (and macro-/weighted-F1) as mean +- std over folds (and seeds), with bootstrap 95%
confidence intervals over utterances. Written as JSON, CSV, Markdown and PNGs.

A condition with no test utterance in a fold (a session without video, say) has no score there:
it is left out of that condition's mean, and a condition with no utterance in any fold reads "n/a".
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np
from cmarr.train.metrics import METRICS, bootstrap_weights, class_recall, confusion, scores, weighted_confusion
from cmarr.train.missing import FULL, MISSING
from cmarr.train.paper import reference
from cmarr.train.rundir import RunDir

CONDITIONS = [c.name for c in MISSING] + [FULL.name]
ROWS = [c.name for c in MISSING] + ["Avg.", FULL.name]


BOOTSTRAP = 1000  # resamples of each fold run's test utterances behind a 95% confidence interval


def fold_metrics(
    fold_results: list[dict], labels: np.ndarray, n_classes: int, speakers: np.ndarray | None = None, key=(0, 0)
) -> dict[str, dict]:
    """Join the test parts of a fold's splits and score each condition on the union: WAR, UAR,
    macro-/weighted-F1, per-class recall and the confusion matrix, and with `speakers` (the store's
    speaker per row) each speaker's confusion matrix. Under "draws" (dropped from the written
    reports): the metrics of BOOTSTRAP resamples of the fold's test utterances, the same resample
    for every condition (so Avg. keeps their pairing), seeded by `key` ((seed, fold))."""
    parts = {
        name: (
            np.concatenate([np.asarray(r["test"][name]["ids"], int) for r in fold_results]),
            np.concatenate([np.asarray(r["test"][name]["pred"], int) for r in fold_results]),
        )
        for name in CONDITIONS
    }
    out = {}
    for name, (ids, pred) in parts.items():
        cm = np.array(confusion(labels[ids], pred, n_classes))
        out[name] = {**_floats(scores(cm)), "n": int(len(ids)), "confusion": cm.tolist(), "recall": class_recall(cm)}
        if speakers is not None:
            out[name]["speakers"] = {
                str(s): confusion(labels[ids][who], pred[who], n_classes)
                for s in np.unique(speakers[ids])
                if (who := speakers[ids] == s).any()
            }
    out["Avg."] = {k: _mean([out[c.name][k] for c in MISSING]) for k in METRICS}
    out["draws"] = _draws(parts, labels, n_classes, key)
    return out


def _floats(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()}


def _draws(parts: dict, labels: np.ndarray, n_classes: int, key) -> dict[str, dict[str, np.ndarray]]:
    """Per row and metric, (BOOTSTRAP,) scores of resampled test utterances (all NaN: none)."""
    universe = np.unique(np.concatenate([ids for ids, _ in parts.values()]))
    if not len(universe):
        return {}
    weights = bootstrap_weights(len(universe), BOOTSTRAP, np.random.default_rng([20240607, *key]))
    draws = {
        name: scores(weighted_confusion(weights[:, np.searchsorted(universe, ids)], labels[ids], pred, n_classes))
        for name, (ids, pred) in parts.items()
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a fold run with no utterance under any condition
        draws["Avg."] = {k: np.nanmean([draws[c.name][k] for c in MISSING], 0) for k in METRICS}
    return draws


def _mean(values: list[float]) -> float:
    """Mean of the values that exist (NaN: a condition with no test utterance)."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def summarize(per_fold: list[dict]) -> dict[str, dict]:
    """Per row, in percent: mean and std over folds x seeds of each metric (NaN where no fold scored),
    and where the folds carry bootstrap draws, `<metric>_ci`: the 95% percentile interval of the
    mean over folds, resampling each fold run's test utterances. `runs`: how many fold runs a row's
    mean is over (fewer than all where some had no test utterance)."""
    table = {}
    draws = [f["metrics"].get("draws") for f in per_fold]
    for row in ROWS:
        cell = {}
        for metric in METRICS:
            values = 100 * np.array([f["metrics"][row].get(metric, np.nan) for f in per_fold], dtype=float)
            kept = values[~np.isnan(values)]
            cell[f"{metric}_mean"] = float(kept.mean()) if len(kept) else float("nan")
            cell[f"{metric}_std"] = float(kept.std()) if len(kept) else float("nan")
            if per_fold and all(d and row in d for d in draws):
                cell[f"{metric}_ci"] = _interval([d[row][metric] for d in draws])
        cell["runs"] = int(len(kept))
        table[row] = cell
    return table


def _interval(draws: list[np.ndarray]) -> list[float]:
    """The 2.5th and 97.5th percentiles (%) of the mean over fold runs of their resampled scores."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(np.stack(draws), 0)
    means = means[~np.isnan(means)]
    return [float(v) for v in 100 * np.percentile(means, [2.5, 97.5])] if len(means) else [math.nan, math.nan]


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


def format_cell(t: dict, metrics=("war", "uar")) -> str:
    """'WAR / UAR' (or the pair `metrics`) of a table cell, 'n/a' where nothing was scored (or a
    report written before the metric existed)."""
    if math.isnan(t.get(f"{metrics[0]}_mean", math.nan)):
        return "n/a"
    return " / ".join(mean_std(t, m) for m in metrics)


def format_ci(t: dict, metric: str = "uar") -> str:
    """'[lo, hi]' of a cell's bootstrap 95% interval (%), '-' where there is none."""
    lo, hi = t.get(f"{metric}_ci", (math.nan, math.nan))
    return "-" if math.isnan(lo) else f"[{lo:.2f}, {hi:.2f}]"


def markdown(table: dict, title: str, n_runs: int, paper: dict, corpus: str = "", notes: list[str] = ()) -> str:
    """`paper`: the paper's (WAR, UAR) per row for this system and corpus ({} for none)."""
    head = f"| Avail. | WAR / UAR (mean +- std over {n_runs} fold runs) | macro-F1 / weighted-F1 | UAR 95% CI |" + (
        f" paper ({corpus}) |" if paper else ""
    )
    lines = [f"# {title}\n", head, "|---|---|---|---|" + ("---|" if paper else "")]
    for row in ROWS:
        ref = (f" {paper[row][0]:.2f} / {paper[row][1]:.2f} |" if row in paper else " - |") if paper else ""
        t = table[row]
        lines.append(
            f"| {row} | {format_cell(t)} | {format_cell(t, ('f1_macro', 'f1_weighted'))} | {format_ci(t)} |{ref}"
        )
    lines += [
        "",
        f"UAR 95% CI: bootstrap percentile interval, {BOOTSTRAP} resamples of each fold run's test utterances.",
    ]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")] + [
    f"{m}_ci_{e}" for m in METRICS for e in ("lo", "hi")
]


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
    """results.json / .csv / .md, the per-class, per-session and per-speaker breakdown (in
    results.md) and one confusion-matrix PNG per condition, into `run_dir`."""
    from cmarr.train.breakdown import breakdown

    n_runs = len(per_fold)
    per_fold = [{**f, "metrics": {k: v for k, v in f["metrics"].items() if k != "draws"}} for f in per_fold]
    header = {"system": system.name, "title": system.title, "options": system.options} if system else {}
    body = {**header, "table": table, "folds": per_fold, "classes": classes, "warnings": list(warnings)}
    run = RunDir(run_dir)
    run.results("json").write_text(json.dumps(body, indent=1))
    with open(run.results("csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["condition", *CSV_COLUMNS])
        for row in ROWS:
            t = table[row]
            cis = [t.get(f"{m}_ci", (math.nan, math.nan)) for m in METRICS]
            w.writerow(
                [
                    row,
                    *(f"{t[k]:.4f}" for k in CSV_COLUMNS[: 2 * len(METRICS)]),
                    *(f"{v:.4f}" for ci in cis for v in ci),
                ]
            )
    notes = list(warnings)
    if note := coverage_note(table, n_runs):
        notes.insert(0, note)
    if system:
        stages = " -> ".join(s.name for s in system.stages)
        options = ", ".join(f"{k} {v}" for k, v in system.options.items())
        notes.insert(0, f"system {system.name}: stages {stages}" + (f"; options: {options}" if options else ""))
    paper = reference(corpus, system.name) if system else {}
    run.results("md").write_text(markdown(table, title, n_runs, paper, corpus, notes) + breakdown(per_fold, classes))
    _confusion_pngs(run.confusion, per_fold, classes)


def _confusion_pngs(folder: Path, per_fold: list[dict], classes: list[str]) -> None:
    from cmarr.shared.plots import plot_confusion

    folder.mkdir(exist_ok=True)
    for row in CONDITIONS:
        cm = np.sum([np.array(f["metrics"][row]["confusion"]) for f in per_fold], axis=0)
        runs = f"{len(per_fold)} fold runs" if len(per_fold) > 1 else "1 fold run"
        title = f"available {row}\n{int(cm.sum())} test utterances of {runs}"
        plot_confusion(cm, classes, title, folder / f"{row.strip('{}').replace(',', '')}.png")
