"""`cmarr-train` end to end on small synthetic stores with a learnable label."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cmarr.predict.cli import app as predict_app
from cmarr.shared.store.synthetic import SyntheticModality, write_synthetic_store
from cmarr.train.cli import train_app
from training import last_run, train
from typer.testing import CliRunner

from tests.conftest import shuffle_session_labels

runner = CliRunner()
MODS = {
    "text": SyntheticModality(5, 6),
    "audio": SyntheticModality(12, 8),
    "video": SyntheticModality(4, 5, missing_rate=0.1),
}
TINY = [
    "--set",
    "train.cm_arr.model.width=16",
    "--set",
    "train.cm_arr.model.heads=2",
    "--set",
    "train.cm_arr.model.latent_dim=8",
    "--set",
    "train.cm_arr.model.latent_len=6",
    "--set",
    "train.cm_arr.model.flow_steps=2",
    "--set",
    "train.cm_arr.model.flow_hidden=8",
    "--set",
    "train.cm_arr.model.rcab_blocks=1",
    "--set",
    "train.cm_arr.model.rcab_reduction=4",
    "--set",
    "train.cm_arr.model.fusion_heads=2",
    "--set",
    "train.cm_arr.model.proj_dim=8",
    "--set",
    "train.cm_arr.optim.lr=0.003",
    "--set",
    "train.cm_arr.optim.patience=3",
    "--set",
    "train.device=cpu",
    "--set",
    "train.amp=none",
]
FOLDS = ["--folds", "5"]  # with TINY and an epoch count: the run these tests train and compare


def epochs(n: int) -> list[str]:
    return ["--set", f"train.cm_arr.optim.epochs={n}"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "s.zarr"
    write_synthetic_store(path, 100, MODS, dtype="float32", seed=3, class_signal=0.8)
    return path


@pytest.mark.slow
def test_train_writes_the_table_and_is_reproducible(store, tmp_path):
    train(store, tmp_path, *FOLDS, *epochs(4), *TINY)
    run = last_run(tmp_path)
    md = (run / "results.md").read_text().split("\n## ")[0].splitlines()  # Table 2, not the breakdowns
    rows = [line.split("|")[1].strip() for line in md if line.startswith("| {") or line.startswith("| Avg")]
    assert rows == ["{t}", "{s}", "{v}", "{v,t}", "{s,v}", "{s,t}", "Avg.", "{s,v,t}"]
    for name in ("results.json", "results.csv", "config.toml", "store.json", "confusion/svt.png"):
        assert (run / name).is_file(), name
    assert len(list(run.glob("seed0/fold*/split0/cm-arr/checkpoint.pt"))) == 5
    assert len(list(run.glob("seed0/fold*/split0/predictions.csv"))) == 5
    lines = (run / "seed0/fold1/split0/cm-arr/metrics.jsonl").read_text().splitlines()
    assert set(json.loads(lines[0])) >= {"epoch", "loss", "cls", "udcl", "spcl", "rec", "nll", "val_score"}
    table = json.loads((run / "results.json").read_text())["table"]
    assert table["{s,v,t}"]["uar_mean"] > 50  # learnable signal, 4 classes
    train(store, tmp_path, *FOLDS, *epochs(4), *TINY)
    again = last_run(tmp_path)
    assert again != run
    assert json.loads((again / "results.json").read_text())["table"] == table


def test_folds_must_match_the_sessions(store, tmp_path):
    result = runner.invoke(train_app, ["--store", str(store), "--folds", "6", "--out", str(tmp_path), *TINY])
    assert result.exit_code == 2 and "5 sessions" in result.output


@pytest.mark.slow
def test_shuffled_test_labels_stay_at_chance_while_validation_does_not(tmp_path):
    """No test leakage into selection: fold 1's test labels are noise, its validation is not."""
    path = tmp_path / "s.zarr"
    write_synthetic_store(path, 200, MODS, dtype="float32", seed=4, class_signal=0.8)
    shuffle_session_labels(path, "Ses01", seed=0)
    train(path, tmp_path / "runs", *FOLDS, *epochs(5), *TINY)
    run = last_run(tmp_path / "runs")
    fold1 = json.loads((run / "seed0/fold1/split0/result.json").read_text())
    test_full = fold1["test"]["{s,v,t}"]
    assert fold1["stages"]["cm-arr"]["val_score"] > 0.7
    assert test_full["uar"] < 0.45  # chance is 0.25 on 40 utterances
    others = json.loads((run / "results.json").read_text())["folds"][1:]
    assert np.mean([f["metrics"]["{s,v,t}"]["uar"] for f in others]) > 0.7


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_uninterrupted_result(store, tmp_path):
    train(store, tmp_path / "ref", *FOLDS, *epochs(4), *TINY)
    reference = last_run(tmp_path / "ref")
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "cmarr.train",
        "--store",
        str(store),
        "--folds",
        "5",
        "--out",
        str(out),
        "--set",
        "train.cm_arr.optim.epochs=4",
        *TINY,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("*/seed0/fold2/split0/cm-arr/state.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = next(out.iterdir())
    assert not (run / "results.json").exists()
    assert subprocess.run(cmd + ["--resume"], capture_output=True).returncode == 0
    a = json.loads((run / "results.json").read_text())["table"]
    b = json.loads((reference / "results.json").read_text())["table"]
    assert a == b


@pytest.mark.slow
def test_predict_with_a_subset_of_modalities(store, tmp_path):
    train(store, tmp_path, *FOLDS, *epochs(2), *TINY)
    run = last_run(tmp_path)
    out = tmp_path / "pred.csv"
    r = runner.invoke(
        predict_app,
        [str(run / "seed0/fold1/split0"), "--store", str(store), "--modalities", "audio,text", "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 100 and {r["used"] for r in rows} == {"text,audio"}
    probs = np.array([[float(r[k]) for k in r if k.startswith("p_")] for r in rows])
    assert probs.shape[1] == 4
    assert np.allclose(probs.sum(1), 1, atol=1e-3)


def test_lazy_reading_gives_the_same_batches_as_memory(store):
    from cmarr.shared.store import FeatureStore
    from cmarr.train.data import StoreData

    eager = StoreData(FeatureStore.open(store))
    lazy = StoreData(FeatureStore.open(store), max_memory_bytes=0)
    lazy.cache_blocks = 1
    assert eager.in_memory and not lazy.in_memory
    rows = np.arange(0, 100, 3)
    order = lazy.epoch_order(rows, np.random.default_rng(0))
    assert sorted(order.tolist()) == rows.tolist()
    norm = eager.normaliser(rows)
    given = {m: np.ones(len(order), bool) for m in ("text", "audio", "video")}
    a, b = eager.batch(order, given, norm, "cpu"), lazy.batch(order, given, norm, "cpu")
    for m in a.x:
        assert np.array_equal(a.x[m].numpy(), b.x[m].numpy()) and np.array_equal(a.mask[m].numpy(), b.mask[m].numpy())


def test_only_folds_trains_those_folds_and_says_it_is_a_subset(store, tmp_path):
    train(store, tmp_path, *FOLDS, *epochs(1), *TINY, "--only-folds", "2")
    run = last_run(tmp_path)
    assert sorted(p.name for p in (run / "seed0").iterdir()) == ["fold2"]
    folds = json.loads((run / "results.json").read_text())["folds"]
    assert [(f["fold"], f["session"]) for f in folds] == [(2, "Ses02")]
    md = (run / "results.md").read_text()
    assert "1 of 5 folds" in md and "only fold(s) 2 (Ses02) of 5 in this table (--only-folds)" in md


def test_only_folds_outside_the_store_is_refused_naming_its_folds(store, tmp_path):
    args = ["--store", str(store), "--only-folds", "2,7", "--out", str(tmp_path / "runs"), *TINY]
    result = runner.invoke(train_app, args)
    assert result.exit_code == 2
    assert "--only-folds 7: the store has 5 folds: 1 (Ses01), 2 (Ses02)" in result.output
    assert not (tmp_path / "runs").exists()  # refused before any run directory
    result = runner.invoke(train_app, ["--store", str(store), "--only-folds", "first", *TINY])
    assert result.exit_code == 2 and "expected fold numbers" in result.output


@pytest.mark.slow
def test_only_folds_then_resume_gives_the_full_run(store, tmp_path):
    train(store, tmp_path / "ref", *FOLDS, *epochs(2), *TINY)
    reference = last_run(tmp_path / "ref")
    train(store, tmp_path / "runs", *FOLDS, *epochs(2), *TINY, "--only-folds", "1,3")
    first = last_run(tmp_path / "runs")
    train(store, tmp_path / "runs", *FOLDS, *epochs(2), *TINY, "--resume")
    rest = last_run(tmp_path / "runs")
    assert rest == first
    table = json.loads((rest / "results.json").read_text())
    assert [f["fold"] for f in table["folds"]] == [1, 2, 3, 4, 5]
    assert table["table"] == json.loads((reference / "results.json").read_text())["table"]
    assert "--only-folds" not in (rest / "results.md").read_text()
    train(store, tmp_path / "runs", *FOLDS, *epochs(2), *TINY, "--resume", "--only-folds", "2")
    again = last_run(tmp_path / "runs")
    assert json.loads((again / "results.json").read_text()) == table  # a finished run keeps its full report
    assert "--only-folds" not in (again / "results.md").read_text()


def test_only_folds_reports_every_finished_fold(store, tmp_path):
    """Also: the thread count and the device are no settings of the run (resumed here with others: a
    --jobs cluster resolves `auto` to its workers' device, and a run may resume on a GPU)."""
    started = ["--only-folds", "4", "--set", "train.cpu_threads=2", "--device", "auto"]
    train(store, tmp_path, *FOLDS, *epochs(1), *TINY, *started)
    first = last_run(tmp_path)
    resumed = ["--resume", "--set", "train.cpu_threads=1", "--device", "cpu"]
    train(store, tmp_path, *FOLDS, *epochs(1), *TINY, "--only-folds", "2", *resumed)
    run = last_run(tmp_path)
    assert run == first
    assert [f["fold"] for f in json.loads((run / "results.json").read_text())["folds"]] == [2, 4]
    assert "only fold(s) 2 (Ses02), 4 (Ses04) of 5 in this table" in (run / "results.md").read_text()
