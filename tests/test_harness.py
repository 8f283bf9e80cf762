"""The protocol as a library: StoreDataset pads as the trainers do, folds are cmarr-train's, and
`score` reproduces a run's own table from its predictions and refuses what it must not score."""

from __future__ import annotations

import csv
import json
import sys
import types

import numpy as np
import pytest
import torch
from cmarr import CONDITIONS, StoreDataset, folds, score
from cmarr.shared.config import PipelineConfig
from cmarr.shared.errors import ConfigError, InputDataError
from cmarr.shared.store import FeatureStore
from cmarr.train.data import StoreData
from cmarr.train.protocol import make_splits
from training import train

QUICK = ["--only-folds", "1,2", "--epochs", "2", "--set", "train.device=cpu", "train.amp=none"]


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, _small_store_template):
    """utt-fusion and CRA trained on folds 1-2 of the small store (their comparison folder), and the
    predictions file of utt-fusion's own test predictions."""
    store, _ = _small_store_template
    out = tmp_path_factory.mktemp("harness")
    train(store, out, "--systems", "utt-fusion,cra", *QUICK)
    comparison = next(out.glob("*-comparison-*"))
    rows = []
    for path in sorted(out.glob("*-utt-fusion-*/seed0/fold*/split0/predictions.csv")):
        rows += [{k: r[k] for k in ("id", "condition", "prediction")} for r in csv.DictReader(open(path))]
    return store, out, comparison, rows


def _write(path, rows, fields=("id", "condition", "prediction")):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def test_store_dataset_batches_equal_the_trainers(small_store):
    path, _ = small_store
    data = StoreData(FeatureStore.open(path))
    fold = folds(data)[0]
    rows = fold.test[:9]
    for condition in CONDITIONS:
        ds = StoreDataset(data, rows, fold.normaliser, condition=condition)
        ours = ds.collate([ds[i] for i in range(len(ds))])
        given = {m: np.full(len(ds.rows), m in condition.given) for m in data.dims}
        theirs = data.batch(ds.rows, given, fold.normaliser, "cpu")
        for m in data.dims:
            assert torch.equal(ours.given[m], theirs.given[m]) and torch.equal(ours.known[m], theirs.known[m])
            assert torch.equal(ours.mask[m], theirs.mask[m]) and torch.allclose(ours.x[m], theirs.x[m])
        assert torch.equal(ours.labels, theirs.labels)
    subset = StoreDataset(data, rows, modalities=("audio",))
    item = subset[0]
    assert item["features"]["text"].shape == (0, data.dims["text"]) and not item["given"]["text"]


def test_folds_are_cmarr_trains(small_store):
    path, _ = small_store
    data = StoreData(FeatureStore.open(path))
    ours = folds(data, seed=3)
    theirs = make_splits(data, np.flatnonzero(data.labels >= 0), None, PipelineConfig().train, 3)
    assert [f.name for f in ours] == [s.name for fold in theirs for s in fold]
    for f, s in zip(ours, (s for fold in theirs for s in fold)):
        assert np.array_equal(f.train, s.train) and np.array_equal(f.val, s.val) and np.array_equal(f.test, s.test)
        assert np.allclose(f.normaliser.mean["audio"], data.normaliser(s.train).mean["audio"])
    assert set(ours[0].ids("test")).isdisjoint(ours[0].ids("train"))


@pytest.mark.slow
def test_scoring_a_runs_own_predictions_gives_its_table(scored_run, tmp_path):
    store, out, comparison, rows = scored_run
    folder = score(comparison, _write(tmp_path / "mine.csv", rows), "copy")
    assert folder == comparison
    table = json.loads((comparison / "table2.json").read_text())
    assert table["systems"] == ["utt-fusion", "cra", "copy"]
    assert table["cells"]["copy"] == table["cells"]["utt-fusion"]
    assert "copy" in (comparison / "table2.md").read_text()
    assert table["folds"]["copy"] == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda rows: rows[1:], r"no prediction of 1 test utterance\(s\) of fold"),
        (lambda rows: rows + rows[:1], r"line \d+: a second prediction of"),
        (lambda rows: [{**rows[0], "condition": "{x}"}] + rows[1:], r"line 2: condition '\{x\}' is not one of"),
        (lambda rows: [{**rows[0], "prediction": "joy"}] + rows[1:], r"line 2: prediction 'joy' is not one of"),
        (lambda rows: [{**rows[0], "id": "nobody"}] + rows[1:], r"line 2: id 'nobody' is not one of"),
    ],
)
def test_a_predictions_file_that_does_not_fit_is_refused(scored_run, tmp_path, edit, match):
    store, out, comparison, rows = scored_run
    with pytest.raises(InputDataError, match=match):
        score(comparison, _write(tmp_path / "bad.csv", edit(list(rows))), "bad")


@pytest.mark.slow
def test_a_training_utterance_is_never_scored_as_held_out(scored_run, tmp_path):
    store, out, comparison, rows = scored_run
    data = StoreData(FeatureStore.open(store))
    trained_on = folds(data)[2].ids("test")[0]  # in folds 1 and 2's training parts; fold 3 was not run
    extra = {"id": trained_on, "condition": "{s,v,t}", "prediction": data.store.classes[0]}
    with pytest.raises(InputDataError, match="outside the run's test parts"):
        score(comparison, _write(tmp_path / "leak.csv", [*rows, extra]), "leak")
    with pytest.raises(ConfigError, match="none of"):
        score(comparison, _write(tmp_path / "same.csv", rows), "cra")


@pytest.mark.slow
def test_curves_and_trackers_follow_every_epoch(small_store, tmp_path, monkeypatch):
    """Each stage writes curves.png; --log tensorboard writes events; --log mlflow logs every epoch's
    metrics to one MLflow run per job (a stand-in module records the calls)."""
    store, _ = small_store
    calls = []
    fake = types.ModuleType("mlflow")
    fake.set_experiment = lambda name: calls.append(("experiment", name))
    fake.start_run = lambda run_name, tags: calls.append(("start", run_name))
    fake.log_metrics = lambda metrics, step: calls.append(("metrics", step, metrics))
    fake.end_run = lambda: calls.append(("end",))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    train(store, tmp_path, "--system", "utt-fusion", "--log", "mlflow", "--log", "tensorboard", *QUICK[:1], "1",
          *QUICK[2:])  # fmt: skip
    run = next(tmp_path.glob("*-utt-fusion-*"))
    assert (run / "seed0/fold1/split0/utt-fusion/curves.png").stat().st_size > 1000
    assert list((run / "tensorboard").glob("utt-fusion-seed0-fold1-split0/events.out.tfevents.*"))
    steps = [c[1] for c in calls if c[0] == "metrics"]
    assert calls[0] == ("experiment", run.name) and calls[1] == ("start", "utt-fusion/seed0/fold1/split0")
    assert steps == [1, 2] and calls[-1] == ("end",)
    assert "utt-fusion/val/s_v_t/uar" in calls[2][2] and "utt-fusion/loss" in calls[2][2]


def test_an_unknown_tracker_is_refused_before_training(small_store, tmp_path):
    store, _ = small_store
    r = train(store, tmp_path, "--log", "wandb", *QUICK, expect=2)
    assert "--log wandb: unknown; choose from tensorboard, mlflow" in r.output
