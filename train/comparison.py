"""The comparison table (the paper's Table 2, or Table 3 for the ablations) over several runs on one
store: a column per system, cells WAR / UAR mean +- std over folds x seeds, the best per row
marked, the paper's numbers beside them, paired significance against CM-ARR, and the test-selection
gap. Written as table2.md / .csv / .json / .tex (booktabs) into a comparison folder.

Significance: for each system and row, the per-(fold, seed) UAR of CM-ARR and of the system are
paired and tested with the Wilcoxon signed-rank test (two-sided, scipy); the p-values of all the
table's tests are corrected together with Holm's step-down method, and a cell is marked where the
corrected p is below 0.05. With 5 folds and one seed no difference can reach 0.05 (the smallest
two-sided p of 5 pairs is 0.0625): use --seeds 3 or more.

Test-selection gap (with --selection-gap): every epoch of the final stage was also scored on the
test part, only to report. "Test-selected" is the Avg. the system would have reported had it kept
the epoch with the best test score (the peers' practice), "gap" the difference to the honest number.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import torch
from cmarr.shared.provenance import text_sha256
from cmarr.train.missing import MISSING
from cmarr.train.paper import reference
from cmarr.train.report import BOOTSTRAP, ROWS, format_ci, mean_std
from cmarr.train.rundir import RunDir

REFERENCE = "cm-arr"
ALPHA = 0.05


def build_comparison(corpus: str, runs: list, kind: str = "table2", skipped: dict[str, str] | None = None) -> dict:
    """The comparison of `runs` (SystemRun: system, run_dir, table) as a JSON-ready dict; `skipped`:
    the systems that could not train on the store, with why."""
    folds = {r.system: RunDir(r.run_dir).read_results()["folds"] for r in runs}
    cells = {r.system: r.table for r in runs}
    systems = [r.system for r in runs]
    return {
        "kind": kind,
        "corpus": corpus,
        "systems": systems,
        "runs": {r.system: r.run_dir.name for r in runs},
        "rows": list(ROWS),
        "cells": cells,
        "n_pairs": {s: len(folds[s]) for s in systems},
        "folds": {r.system: r.folds for r in runs},  # 1-based folds each system's cells hold
        "n_folds": max(r.n_folds for r in runs),
        "best": _best(cells),
        "paper": {s: {row: list(v) for row, v in reference(corpus, s).items()} for s in systems},
        "significance": significance(folds),
        "selection_gap": {r.system: g for r in runs if (g := selection_gap(r.run_dir, r.system))},
        "skipped": dict(skipped or {}),
    }


def _best(cells: dict) -> dict[str, dict[str, list[str]]]:
    """Per row, the systems with the highest WAR mean and those with the highest UAR mean, compared
    as the table prints them (2 decimals): equal scores are all best, whatever their float rounding."""
    best = {}
    for row in ROWS:
        pick = {}
        for metric in ("war", "uar"):
            scored = {s: t[row][f"{metric}_mean"] for s, t in cells.items() if not math.isnan(t[row][f"{metric}_mean"])}
            if scored:
                top = max(round(v, 2) for v in scored.values())
                pick[metric] = [s for s, v in scored.items() if round(v, 2) == top]
        best[row] = pick
    return best


def _subset(c: dict) -> str:
    """'' for a table over every fold; else what a first check (--only-folds) holds, to print by it."""
    partial = {s: f for s, f in c["folds"].items() if len(f) < c["n_folds"]}
    if not partial:
        return ""
    held = sorted({tuple(f) for f in partial.values()})
    which = "; ".join(", ".join(map(str, f)) for f in held)
    return (
        f"only fold(s) {which} of {c['n_folds']} for {', '.join(partial)} (--only-folds): a first check, not the "
        "protocol's figure"
    )


def significance(folds: dict[str, list[dict]]) -> dict:
    """Wilcoxon signed-rank tests of CM-ARR against each system per row (UAR over the paired
    (seed, fold) runs), Holm-corrected over the whole table."""
    from scipy.stats import wilcoxon

    if REFERENCE not in folds:
        return {}
    ref = {(f["seed"], f["fold"]): f["metrics"] for f in folds[REFERENCE]}
    tests = []
    for system, runs in folds.items():
        if system == REFERENCE:
            continue
        for row in ROWS:
            pairs = [
                (ref[k][row]["uar"], f["metrics"][row]["uar"]) for f in runs if (k := (f["seed"], f["fold"])) in ref
            ]
            pairs = [(a, b) for a, b in pairs if not (math.isnan(a) or math.isnan(b))]
            diffs = np.array([a - b for a, b in pairs])
            if len(pairs) < 2:
                p = None  # one pair is no test: reported as not tested, not as p = 1
            elif not np.any(diffs != 0):
                p = 1.0
            else:
                p = float(wilcoxon(diffs, zero_method="zsplit", alternative="two-sided").pvalue)
            tests.append((system, row, p, len(pairs), float(np.mean(diffs)) if len(pairs) else float("nan")))
    tested = [t for t in tests if t[2] is not None]
    corrected = dict(zip(((t[0], t[1]) for t in tested), holm([t[2] for t in tested])))  # over the tests made
    out: dict = {}
    for system, row, p, n, diff in tests:
        ph = corrected.get((system, row))
        out.setdefault(system, {})[row] = {
            "test": "wilcoxon signed-rank, two-sided, Holm-corrected" if p is not None else "not tested (< 2 pairs)",
            "pairs": n,
            "uar_difference": 100 * diff,  # CM-ARR minus the system, in points
            "p": p,
            "p_holm": ph,
            "significant": ph is not None and ph < ALPHA,
        }
    return out


def significance_note(pairs: int) -> str:
    """What the † can mean with `pairs` paired fold runs: nothing below 2, and nothing at all while
    the smallest two-sided p an exact signed-rank test can give, 2^(1 - pairs), is not below ALPHA."""
    if pairs < 2:
        return f"not tested: {pairs} paired fold run (a signed-rank test needs at least 2)"
    smallest = 2.0 ** (1 - pairs)
    if smallest >= ALPHA:
        return (
            f"Wilcoxon signed-rank over {pairs} paired fold runs, Holm-corrected, p < {ALPHA}; with {pairs} pairs "
            f"the smallest possible p is {smallest:.3g}, so no difference can be marked (more seeds give more pairs)"
        )
    return f"Wilcoxon signed-rank over {pairs} paired fold runs, Holm-corrected, p < {ALPHA}"


def _key(fold: dict) -> tuple[int, int]:
    return fold["seed"], fold["fold"]


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given)."""
    m = len(pvalues)
    order = np.argsort(pvalues)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted.tolist()


def selection_gap(run_dir: Path, system: str) -> dict | None:
    """Avg. WAR/UAR with each split's epoch chosen on the *test* score (the peers' practice),
    against the honest (validation-selected) Avg.; None when the run logged no test scores."""
    run = RunDir(run_dir)
    results, final = run.read_results(), run.final_stage()
    picked = []
    for log in (s.stage(final).metrics for s in run.splits()):
        if not log.is_file():
            continue
        epochs = [json.loads(line) for line in log.read_text().splitlines()]
        epochs = [e for e in epochs if "test" in e]
        if not epochs:
            return None
        best = max(epochs, key=lambda e: _avg(e["test"], "uar"))
        picked.append({"war": _avg(best["test"], "war"), "uar": _avg(best["test"], "uar"), "epoch": best["epoch"]})
    if not picked:
        return None
    honest = results["table"]["Avg."]
    test_war = 100 * float(np.mean([p["war"] for p in picked]))
    test_uar = 100 * float(np.mean([p["uar"] for p in picked]))
    return {
        "honest_war": honest["war_mean"],
        "honest_uar": honest["uar_mean"],
        "test_selected_war": test_war,
        "test_selected_uar": test_uar,
        "gap_war": test_war - honest["war_mean"],
        "gap_uar": test_uar - honest["uar_mean"],
        "splits": len(picked),
    }


def _avg(scores: dict, metric: str) -> float:
    vals = [scores[c.name][metric] for c in MISSING if c.name in scores and not math.isnan(scores[c.name][metric])]
    return float(np.mean(vals)) if vals else float("nan")


# ---------------------------------------------------------------- writing


def comparison_file(folder: Path, kind: str, suffix: str = "json") -> Path:
    """table2.json (.md, .tex, .csv) or table3.* in a comparison folder."""
    return folder / f"{kind}.{suffix}"


def write_comparison(
    out: Path,
    corpus: str,
    runs: list,
    kind: str = "table2",
    data=None,
    device=None,
    folder: Path | None = None,
    skipped: dict[str, str] | None = None,
) -> Path:
    """Write the comparison folder for `runs` (`folder`, or a new one in `out` named after the runs);
    returns it. With `data` (the store's StoreData), also the reconstructions' t-SNE and their
    distances to the true representations (Fig. 5)."""
    comparison = build_comparison(corpus, runs, kind, skipped)
    tag = text_sha256(" ".join(sorted(r.run_dir.name for r in runs)))[:8]
    folder = folder or out / f"{corpus}-{'comparison' if kind == 'table2' else 'ablations'}-{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    if data is not None:
        from cmarr.shared.modalities import MODALITIES
        from cmarr.train.figures import reconstruction_report

        comparison["distances"] = reconstruction_report(folder, runs, data, device or torch.device("cpu"))
        comparison["modalities"] = list(MODALITIES)
    comparison_file(folder, kind).write_text(json.dumps(comparison, indent=1))
    comparison_file(folder, kind, "md").write_text(markdown(comparison))
    comparison_file(folder, kind, "tex").write_text(latex(comparison))
    with open(comparison_file(folder, kind, "csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["system", "condition", "war_mean", "war_std", "uar_mean", "uar_std", "paper_war", "paper_uar",
                    "p_holm_vs_cm_arr", "folds_used", "folds_total", *EXTRA_COLUMNS])  # fmt: skip
        for s in comparison["systems"]:
            for row in ROWS:
                t, paper = comparison["cells"][s][row], comparison["paper"][s].get(row, ["", ""])
                sig = comparison["significance"].get(s, {}).get(row, {}).get("p_holm", "")
                w.writerow(
                    [
                        s,
                        row,
                        *(f"{t[k]:.4f}" for k in ("war_mean", "war_std", "uar_mean", "uar_std")),
                        *paper,
                        sig,
                        len(comparison["folds"][s]),
                        comparison["n_folds"],
                        *_extra(t),
                    ]  # fmt: skip
                )
    return folder


EXTRA_COLUMNS = ["f1_macro_mean", "f1_macro_std", "f1_weighted_mean", "f1_weighted_std", "uar_ci_lo", "uar_ci_hi"]


def _extra(t: dict) -> list[str]:
    """The csv's F1 and confidence-interval cells of a table cell ('' where a report has none)."""
    lo, hi = t.get("uar_ci", ("", ""))
    values = [t.get(k, "") for k in EXTRA_COLUMNS[:4]] + [lo, hi]
    return [f"{v:.4f}" if isinstance(v, float) else "" for v in values]


def _cell(c: dict, row: str, s: str, bold=("**", "**"), mark="†") -> str:
    t = c["cells"][s][row]
    if math.isnan(t["war_mean"]):
        return "n/a"
    best = c["best"][row]
    war, uar = (mean_std(t, m, "±") for m in ("war", "uar"))
    war = f"{bold[0]}{war}{bold[1]}" if s in best.get("war", ()) else war
    uar = f"{bold[0]}{uar}{bold[1]}" if s in best.get("uar", ()) else uar
    sig = c["significance"].get(s, {}).get(row, {}).get("significant")
    return f"{war} / {uar}" + (mark if sig else "")


def markdown(c: dict) -> str:
    systems = c["systems"]
    title = "Table 2" if c["kind"] == "table2" else "Table 3 (ablations)"
    lines = [f"# {title} on {c['corpus']}: WAR / UAR (%), mean ± std over folds x seeds\n"]
    if subset := _subset(c):
        lines += [f"**{subset}.**\n"]
    lines += _md_table(["Avail.", *systems], [[row, *(_cell(c, row, s) for s in systems)] for row in ROWS])
    pairs = min(c["n_pairs"].values())
    lines += [
        "",
        f"Bold: best WAR / best UAR of the row. † CM-ARR's UAR differs from the system's ({significance_note(pairs)}).",
    ]
    lines += ["", "## Macro-F1 / weighted-F1 (%), mean ± std over folds x seeds\n"]
    lines += _md_table(["Avail.", *systems], [[row, *(_f1_cell(c, row, s) for s in systems)] for row in ROWS])
    lines += ["", f"## UAR (%), bootstrap 95% confidence interval ({BOOTSTRAP} resamples of the test utterances)\n"]
    lines += _md_table(["Avail.", *systems], [[row, *(format_ci(c["cells"][s][row]) for s in systems)] for row in ROWS])
    with_paper = [s for s in systems if c["paper"][s]]
    if with_paper:
        rows = [[row, *(_pair(c["paper"][s].get(row)) for s in with_paper)] for row in ROWS]
        lines += ["", f"## The paper's numbers ({c['corpus']})\n", *_md_table(["Avail.", *with_paper], rows)]
    if c["selection_gap"]:
        head = ["system", "honest (validation-selected)", "test-selected (peers' practice)", "gap"]
        rows = [
            [s, _pair((g["honest_war"], g["honest_uar"])), _pair((g["test_selected_war"], g["test_selected_uar"])),
             f"{g['gap_war']:+.2f} / {g['gap_uar']:+.2f}"]
            for s, g in c["selection_gap"].items()
        ]  # fmt: skip
        lines += ["", "## Test-selection gap (Avg. over the six missing conditions)\n", *_md_table(head, rows)]
    if c.get("distances"):
        mods = c["modalities"]
        rows = [[s, *(f"{d.get(m, float('nan')):.4f}" for m in mods)] for s, d in c["distances"].items()]
        lines += ["", "## Reconstructed vs true representations (MMD², RBF kernel, median bandwidth)\n"]
        lines += _md_table(["system", *mods], rows)
    for system, why in c.get("skipped", {}).items():
        lines += ["", f"{system}: {why}."]
    lines += ["", "Runs: " + ", ".join(f"{s} `{r}`" for s, r in c["runs"].items())]
    return "\n".join(lines) + "\n"


def _f1_cell(c: dict, row: str, s: str, plus: str = "±") -> str:
    t = c["cells"][s][row]
    if math.isnan(t.get("f1_macro_mean", math.nan)):
        return "n/a"
    return f"{mean_std(t, 'f1_macro', plus)} / {mean_std(t, 'f1_weighted', plus)}"


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|---" * len(head) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def _pair(v) -> str:
    return f"{v[0]:.2f} / {v[1]:.2f}" if v else "-"


def latex(c: dict) -> str:
    """Two booktabs tables ready for a paper (\\usepackage{booktabs}): WAR / UAR, best cells bold,
    † significant; then macro-F1 / weighted-F1."""
    systems = c["systems"]
    cells = [[_cell(c, row, s, ("\\textbf{", "}"), "$^\\dagger$") for s in systems] for row in ROWS]
    subset = _subset(c).replace("--", "-{}-")  # LaTeX would typeset -- as an en dash
    caption = (
        f"WAR / UAR (\\%) on {c['corpus']}, mean $\\pm$ std over folds $\\times$ seeds. Bold: best of the row. "
        "$^\\dagger$: CM-ARR's UAR differs significantly (Wilcoxon signed-rank, Holm-corrected, $p<0.05$)."
    ) + (f" {subset}." if subset else "")
    caption += "".join(f" {name.replace('-', '{-}')}: {why}." for name, why in c.get("skipped", {}).items())
    f1 = [[_f1_cell(c, row, s) for s in systems] for row in ROWS]
    f1_caption = f"Macro-F1 / weighted-F1 (\\%) on {c['corpus']}, mean $\\pm$ std over folds $\\times$ seeds."
    return _latex_table(systems, cells, caption) + _latex_table(systems, f1, f1_caption)


def _latex_table(systems: list[str], cells: list[list[str]], caption: str) -> str:
    head = " & ".join(["Avail."] + [s.replace("-", "\\mbox{-}") for s in systems])
    body = []
    for row, line in zip(ROWS, cells):
        name = row.replace("{", "\\{").replace("}", "\\}")
        body.append(f"${name}$ & " + " & ".join(x.replace("±", "$\\pm$") for x in line) + " \\\\")
    return "\n".join([
        "\\begin{table*}[t]", "\\centering", "\\small", f"\\begin{{tabular}}{{l{'c' * len(systems)}}}", "\\toprule",
        head + " \\\\", "\\midrule", *body[:6], "\\midrule", *body[6:], "\\bottomrule", "\\end{tabular}",
        f"\\caption{{{caption}}}", "\\end{table*}", "",
    ])  # fmt: skip
