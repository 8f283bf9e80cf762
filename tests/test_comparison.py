"""The comparison report: significance, the test-selection gap, sweeps, and what selection may read."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from cmarr.shared.store.synthetic import SyntheticModality, write_synthetic_store
from cmarr.train.cli import train_app
from cmarr.train.comparison import _best, holm, significance, significance_note
from cmarr.train.report import ROWS, mean_std
from typer.testing import CliRunner

from tests.conftest import shuffle_session_labels

runner = CliRunner()
MODS = {"text": SyntheticModality(4, 5), "audio": SyntheticModality(8, 6), "video": SyntheticModality(3, 4)}
TINY = [
    f"--set=train.cm_arr.model.{k}"
    for k in (
        "width=8",
        "heads=2",
        "latent_dim=4",
        "latent_len=3",
        "flow_steps=1",
        "flow_hidden=4",
        "rcab_blocks=1",
        "rcab_reduction=2",
        "fusion_heads=2",
        "proj_dim=4",
    )
] + [
    "--set=train.mmin_family.embedding=4",
    "--set=train.mmin_family.cls_layers=[4]",
    "--set=train.device=cpu",
    "--set=train.amp=none",
    "--set=train.cm_arr.optim.lr=0.01",
    "--set=train.utt_fusion.optim.batch_size=16",
]
TINY_DICMOR = [
    f"--set=train.dicmor.model.{k}"
    for k in ("width=4", "heads=2", "layers=1", "seq_len=6", "flow_steps=1", "flow_hidden=4", "rcab_blocks=1")
] + [f"--set=train.dicmor.{part}.{k}" for part in ("pretrain", "optim") for k in ("epochs=1", "batch_size=16")]


def test_holm_matches_its_definition():
    p = [0.01, 0.04, 0.03, 0.2]
    # sorted 0.01, 0.03, 0.04, 0.2 -> x4, x3, x2, x1 with the running maximum
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.2])


def _folds(shift: float, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"seed": s, "fold": f, "metrics": {row: {"war": 0.5, "uar": 0.5 + shift + 0.01 * rng.normal()} for row in ROWS}}
        for s in range(n // 5) for f in range(1, 6)
    ]  # fmt: skip


def test_significance_marks_a_clear_difference_and_not_noise():
    folds = {"cm-arr": _folds(0.1, 15, 0), "mmin": _folds(0.0, 15, 1), "cra": _folds(0.1, 15, 2)}
    sig = significance(folds)
    assert all(sig["mmin"][row]["significant"] for row in ROWS)
    assert not any(sig["cra"][row]["significant"] for row in ROWS)
    assert sig["mmin"]["{t}"]["uar_difference"] == pytest.approx(10, abs=2)
    few = significance({"cm-arr": _folds(0.1, 5, 0), "mmin": _folds(0.0, 5, 1)})
    assert not any(r["significant"] for r in few["mmin"].values())  # 5 pairs can never reach p < 0.05


def test_one_pair_is_not_tested_and_the_footnote_says_what_the_mark_can_mean():
    """--only-folds 1: one pair is no test (p was reported as 1.0, Holm-corrected with the rest); the
    footnote says so, and says when the pairs are too few for any p below 0.05 (5: 2^-4 = 0.0625)."""
    one = significance({"cm-arr": _folds(0.1, 5, 0)[:1], "mmin": _folds(0.0, 5, 1)[:1]})
    assert all(r["p"] is None and r["p_holm"] is None and not r["significant"] for r in one["mmin"].values())
    assert "not tested: 1 paired fold run" in significance_note(1)
    assert "smallest possible p is 0.0625, so no difference can be marked" in significance_note(5)
    assert "smallest" not in significance_note(6)  # 2^-5 = 0.031


def test_a_mean_over_one_fold_run_shows_no_spread():
    cell = {"war_mean": 12.5, "war_std": 0.0, "uar_mean": 25.0, "uar_std": 0.0, "runs": 1}
    assert (mean_std(cell, "war"), mean_std({**cell, "runs": 2}, "uar", " ± ")) == ("12.50", "25.00 ± 0.00")


def test_equal_scores_are_all_best_whatever_their_float_rounding():
    """70.83 three ways (a 1-fold table: 17 of 24 utterances), one a float ulp apart: all bold."""
    cell = {row: {"war_mean": 50.0, "uar_mean": 50.0} for row in ROWS}
    cells = {s: {r: dict(v) for r, v in cell.items()} for s in ("cm-arr", "baseline", "dicmor", "cra")}
    cells["cm-arr"]["{v}"]["uar_mean"] = 70.83333333333333
    cells["baseline"]["{v}"]["uar_mean"] = 70.83333333333334
    cells["dicmor"]["{v}"]["uar_mean"] = 70.833333
    cells["cra"]["{v}"]["uar_mean"] = 70.82
    best = _best(cells)
    assert best["{v}"]["uar"] == ["cm-arr", "baseline", "dicmor"]
    assert best["{t}"]["war"] == ["cm-arr", "baseline", "dicmor", "cra"]


def test_a_comparison_of_some_folds_says_so(store, tmp_path):
    args = ["--store", str(store), "--only-folds", "1", "--out", str(tmp_path), "--systems", "cm-arr,baseline",
            "--set=train.cm_arr.optim.epochs=1", *TINY]  # fmt: skip
    r = runner.invoke(train_app, args)
    assert r.exit_code == 0, r.output
    [folder] = list(tmp_path.glob("synthetic-comparison-*"))
    subset = "only fold(s) 1 of 5 for cm-arr, baseline (--only-folds): a first check, not the protocol's figure"
    assert subset in (folder / "table2.md").read_text()
    assert subset.replace("--", "-{}-") in (folder / "table2.tex").read_text()
    table = json.loads((folder / "table2.json").read_text())
    assert table["folds"] == {"cm-arr": [1], "baseline": [1]} and table["n_folds"] == 5
    first = next(csv.DictReader((folder / "table2.csv").open()))
    assert (first["folds_used"], first["folds_total"]) == ("1", "5")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("cmp") / "s.zarr"
    write_synthetic_store(path, 60, MODS, dtype="float32", seed=5, class_signal=1.0)
    return path


@pytest.mark.slow
def test_several_systems_write_table2_with_significance_and_the_selection_gap(store, tmp_path):
    args = ["--store", str(store), "--folds", "5", "--out", str(tmp_path), "--systems",
            "cm-arr,baseline,utt-fusion,dicmor", "--seeds", "2", "--selection-gap", "--set=train.cm_arr.optim.epochs=2",
            "--set=train.utt_fusion.optim.epochs=2", "--set=train.utt_fusion.optim.decay_epochs=0", *TINY,
            *TINY_DICMOR]  # fmt: skip
    r = runner.invoke(train_app, args)
    assert r.exit_code == 0, r.output
    [folder] = list(tmp_path.glob("synthetic-comparison-*"))
    for ext in ("md", "csv", "json", "tex"):
        assert (folder / f"table2.{ext}").is_file()
    table = json.loads((folder / "table2.json").read_text())
    assert table["systems"] == ["cm-arr", "baseline", "utt-fusion", "dicmor"] and table["n_pairs"]["cm-arr"] == 10
    assert set(table["significance"]) == {"baseline", "utt-fusion", "dicmor"}
    assert table["significance"]["baseline"]["{t}"]["pairs"] == 10
    gap = table["selection_gap"]["cm-arr"]
    # choosing on test can only look better: the honest epoch is one of those it chooses among
    assert gap["splits"] == 10 and gap["test_selected_uar"] >= gap["honest_uar"] - 1e-9 and gap["gap_uar"] >= -1e-9
    md = (folder / "table2.md").read_text()
    assert "| Avail. | cm-arr | baseline | utt-fusion | dicmor |" in md and "Test-selection gap" in md
    assert "\\toprule" in (folder / "table2.tex").read_text()
    assert (folder / "reconstructions_tsne.png").is_file() and set(table["distances"]) == {
        "cm-arr",
        "dicmor",
    }  # the systems that reconstruct
    lines = (next(tmp_path.glob("synthetic-cm-arr-*")) / "seed0/fold1/split0/cm-arr/metrics.jsonl").read_text()
    assert all("test" in json.loads(line) for line in lines.splitlines())


@pytest.mark.slow
def test_shuffled_test_labels_leave_every_chosen_epoch_unchanged(store, tmp_path):
    """Selection never reads the test part, even with --selection-gap scoring it every epoch."""
    args = ["--folds", "5", "--selection-gap", "--set=train.cm_arr.optim.epochs=4",
            "--set=train.cm_arr.optim.patience=4", *TINY]  # fmt: skip
    clean = runner.invoke(train_app, ["--store", str(store), "--out", str(tmp_path / "a"), *args])
    assert clean.exit_code == 0, clean.output
    shuffled = tmp_path / "shuffled.zarr"
    write_synthetic_store(shuffled, 60, MODS, dtype="float32", seed=5, class_signal=1.0)
    shuffle_session_labels(shuffled, "Ses01", seed=1)
    r = runner.invoke(train_app, ["--store", str(shuffled), "--out", str(tmp_path / "b"), *args])
    assert r.exit_code == 0, r.output
    [a], [b] = list((tmp_path / "a").glob("*/seed0/fold1/split0")), list((tmp_path / "b").glob("*/seed0/fold1/split0"))
    ra, rb = (json.loads((p / "result.json").read_text()) for p in (a, b))
    assert ra["stages"] == rb["stages"]  # the same best epoch and validation score
    test_a = [json.loads(x)["test"] for x in (a / "cm-arr/metrics.jsonl").read_text().splitlines()]
    test_b = [json.loads(x)["test"] for x in (b / "cm-arr/metrics.jsonl").read_text().splitlines()]
    assert test_a != test_b  # the shuffled labels did reach the (reported) test scores


@pytest.mark.slow
def test_a_sweep_writes_its_curve(store, tmp_path):
    r = runner.invoke(train_app, ["--store", str(store), "--folds", "5", "--out", str(tmp_path), "--sweep",
                                  "alpha=0.5,2", "--set=train.cm_arr.optim.epochs=1", *TINY])  # fmt: skip
    assert r.exit_code == 0, r.output
    [folder] = list(tmp_path.glob("sweep-alpha-*"))
    rows = (folder / "sweep.csv").read_text().splitlines()
    assert rows[0].startswith("train.cm_arr.loss.alpha,war_mean") and [x.split(",")[0] for x in rows[1:]] == [
        "0.5",
        "2.0",
    ]
    assert (folder / "sweep.png").stat().st_size > 10_000
    bad = runner.invoke(train_app, ["--store", str(store), "--out", str(tmp_path), "--sweep", "alpha=0.5"])
    assert bad.exit_code == 2 and "two or more values" in bad.output
