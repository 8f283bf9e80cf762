"""Where a run's scores come from: per-class recall, per-session (fold run) and per-speaker UAR, as
Markdown sections appended to results.md.

Per class and per speaker, the utterances of every fold run are pooled (their confusion matrices
summed, each speaker being in one fold's test part); per session, each fold run is a row, as
scored in the table's mean. Avg. is the mean over the six missing conditions, as in Table 2.
"""

from __future__ import annotations

import math

import numpy as np
from cmarr.train.metrics import class_recall, scores
from cmarr.train.missing import FULL, MISSING

CONDITIONS = [c.name for c in MISSING] + [FULL.name]


def breakdown(per_fold: list[dict], classes: list[str]) -> str:
    """The three sections (Markdown) for the fold runs `per_fold` (entries of results.json's folds)."""
    if not per_fold:
        return ""
    return "\n".join(["", *per_class(per_fold, classes), "", *per_session(per_fold), "", *per_speaker(per_fold)]) + "\n"


def per_class(per_fold: list[dict], classes: list[str]) -> list[str]:
    lines = ["## Recall per class (%, test utterances of all fold runs pooled)\n", _head(["Avail.", *classes])]
    for name in CONDITIONS:
        cm = np.sum([np.array(f["metrics"][name]["confusion"]) for f in per_fold], axis=0)
        lines.append(_row([name, *(_pct(r) for r in class_recall(cm))]))
    return lines


def per_session(per_fold: list[dict]) -> list[str]:
    head = ["seed", "fold", "session", "n ({s,v,t})", *(f"UAR {c}" for c in CONDITIONS), "UAR Avg.", "wF1 Avg."]
    lines = ["## Per session (each fold run's held-out session, %)\n", _head(head)]
    for f in per_fold:
        m = f["metrics"]
        uars = [_pct(m[c]["uar"]) for c in CONDITIONS]
        avg = m["Avg."]
        cells = [f["seed"], f["fold"], f.get("session", ""), m[FULL.name]["n"], *uars, _pct(avg["uar"])]
        lines.append(_row([*cells, _pct(avg.get("f1_weighted", math.nan))]))
    return lines


def per_speaker(per_fold: list[dict]) -> list[str]:
    """Per speaker: utterances under {s,v,t}, WAR and UAR under {s,v,t}, UAR Avg."""
    if not all("speakers" in f["metrics"][FULL.name] for f in per_fold):
        return []
    pooled: dict[str, dict[str, np.ndarray]] = {}
    for f in per_fold:
        for name in CONDITIONS:
            for speaker, cm in f["metrics"][name]["speakers"].items():
                mine = pooled.setdefault(speaker, {})
                mine[name] = mine.get(name, 0) + np.array(cm)
    head = ["speaker", "n ({s,v,t})", "WAR {s,v,t}", "UAR {s,v,t}", "UAR Avg."]
    lines = ["## Per speaker (test utterances of all fold runs pooled, %)\n", _head(head)]
    for speaker in sorted(pooled):
        cms = pooled[speaker]
        full = scores(cms[FULL.name]) if FULL.name in cms else {"war": math.nan, "uar": math.nan}
        missing = [float(scores(cms[c.name])["uar"]) for c in MISSING if c.name in cms]
        avg = float(np.nanmean(missing)) if any(not math.isnan(v) for v in missing) else math.nan
        n = int(cms[FULL.name].sum()) if FULL.name in cms else 0
        lines.append(_row([speaker, n, _pct(full["war"]), _pct(full["uar"]), _pct(avg)]))
    return lines


def _pct(v) -> str:
    return "n/a" if v is None or math.isnan(float(v)) else f"{100 * float(v):.2f}"


def _head(cells: list[str]) -> str:
    return _row(cells) + "\n" + "|---" * len(cells) + "|"


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"
