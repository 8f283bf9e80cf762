"""`cmarr-train evaluate`: a trained run scored held-out on another store, and at missing rates."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cmarr.shared.errors import ConfigError
from cmarr.shared.modalities import MODALITIES
from cmarr.shared.store.synthetic import SyntheticModality, write_synthetic_store
from cmarr.train.cli import train_app
from cmarr.train.heldout import evaluate_run
from cmarr.train.metrics import METRICS
from cmarr.train.missing import rate_mask
from cmarr.train.report import ROWS
from cmarr.train.rundir import RunDir
from typer.testing import CliRunner

from tests.test_comparison import MODS, TINY
from tests.training import train

FOLDS = ["--only-folds", "1,2", "--systems", "cm-arr,baseline", "--set=train.cm_arr.optim.epochs=1", *TINY]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(the comparison folder of cm-arr and the baseline, 2 folds, on a 60-utterance store; its folder)."""
    base = tmp_path_factory.mktemp("heldout")
    write_synthetic_store(base / "a.zarr", 60, MODS, dtype="float32", seed=3, class_signal=1.0)
    train(base / "a.zarr", base / "runs", *FOLDS)
    [comparison] = (base / "runs").glob("synthetic-comparison-*")
    return comparison, base


def _held_out(run: RunDir) -> set[str]:
    import csv

    return {r["id"] for s in run.splits() for r in csv.DictReader(s.predictions.open())}


def test_evaluating_on_its_own_store_gives_the_run_its_own_numbers(trained):
    comparison, base = trained
    out = evaluate_run(comparison, out=base / "own", missing_rates=[0.0, 0.5])
    [folder] = [p for p in out.iterdir() if p.is_dir()]
    table2 = json.loads((folder / "table2.json").read_text())
    for system, name in json.loads((comparison / "table2.json").read_text())["runs"].items():
        was, now = (
            RunDir(comparison.parent / name).read_results()["table"],
            RunDir(folder / name).read_results()["table"],
        )
        for row in ROWS:
            for metric in METRICS:
                assert now[row][f"{metric}_mean"] == pytest.approx(was[row][f"{metric}_mean"], abs=1e-9), (system, row)
        assert table2["cells"][system]["Avg."]["uar_mean"] == pytest.approx(was["Avg."]["uar_mean"], abs=1e-9)
        # every utterance has every modality: at rate 0 each is scored with all three, as under {s,v,t}
        rates = json.loads((folder / "missing_rates.json").read_text())["systems"][system]
        assert rates["0.0"]["uar_mean"] == pytest.approx(was["{s,v,t}"]["uar_mean"], abs=1e-9)
    assert (out / "robustness.png").stat().st_size > 0 and (folder / "missing_rates.png").is_file()
    assert "| cm-arr |" in (out / "robustness.md").read_text()


def test_only_held_out_utterances_are_scored_and_the_rest_are_counted(trained):
    comparison, base = trained
    # 70 utterances: the run's 60 ids and 10 it never saw; and a 50-utterance store lacking some held out
    write_synthetic_store(base / "b.zarr", 70, MODS, dtype="float32", seed=3, class_signal=1.0)
    write_synthetic_store(base / "c.zarr", 50, MODS, dtype="float32", seed=3, class_signal=1.0)
    out = evaluate_run(comparison, stores=[base / "b.zarr", base / "c.zarr"], out=base / "other")
    name = json.loads((comparison / "table2.json").read_text())["runs"]["cm-arr"]
    held = _held_out(RunDir(comparison.parent / name))
    for store, n in (("b", 70), ("c", 50)):
        [folder] = [p for p in out.iterdir() if p.is_dir() and (p / name).is_dir() and _location(p / name) == store]
        results = RunDir(folder / name).read_results()
        scored = sum(f["metrics"]["{s,v,t}"]["n"] for f in results["folds"])
        ids = [f"Ses{i % 5 + 1:02d}{'FM'[i % 2]}_synth_{'FM'[(i // 2) % 2]}{i:05d}" for i in range(n)]
        assert scored == len(held & set(ids))
        notes = " ".join(results["warnings"])
        assert f"{n - len(held & set(ids))} utterance(s) of the store are in no fold's test part" in notes
        assert ("not in the store" in notes) == (store == "c")


def _location(run_dir) -> str:
    return json.loads(RunDir(run_dir).store.read_text())["location"].rsplit("/", 1)[-1][0]


def test_features_of_another_encoder_are_refused(trained):
    comparison, base = trained
    other = {**MODS, "audio": SyntheticModality(8, 7)}
    write_synthetic_store(base / "d.zarr", 60, other, dtype="float32", seed=3)
    with pytest.raises(ConfigError, match="audio features differ.*dim 7, trained on 6"):
        evaluate_run(comparison, stores=[base / "d.zarr"], out=base / "d-out")


def test_rate_masks_drop_at_the_rate_keep_one_and_never_give_what_the_store_lacks():
    rng = np.random.default_rng(0)
    present = {m: rng.random(20000) > 0.1 for m in MODALITIES}
    for rate in (0.0, 0.3, 0.7):
        mask = rate_mask(present, rate, seed=5)
        kept = np.stack([mask[m] for m in MODALITIES], 1)
        have = np.stack([present[m] for m in MODALITIES], 1)
        assert not (kept & ~have).any() and kept[have.any(1)].any(1).all()
        dropped = 1 - kept[have].mean()
        # at-least-one-kept puts some back: the share dropped is at most the rate, close to it while rare
        assert dropped <= rate + 0.01 and (rate > 0.5 or dropped >= rate - 0.05)
        assert all((mask[m] == rate_mask(present, rate, seed=5)[m]).all() for m in MODALITIES)


@pytest.mark.parametrize("rates", ["1", "0.2,x", "-0.1", ""])
def test_bad_missing_rates_are_refused_before_any_work(rates, tmp_path):
    r = CliRunner().invoke(train_app, ["evaluate", "--run", str(tmp_path), "--missing-rates", rates])
    assert r.exit_code == 2 and "--missing-rates" in r.output


def test_a_degraded_store_is_named_by_its_degradation():
    from types import SimpleNamespace

    from cmarr.train.heldout import degradation_label

    store = SimpleNamespace(
        degradation={"audio": {"spec": "audio:snr=0", "seed": 0}, "video": {"spec": "video:blur=4"}}
    )
    assert degradation_label(store) == "audio:snr=0,video:blur=4"
    assert degradation_label(SimpleNamespace(degradation={})) == "clean"
