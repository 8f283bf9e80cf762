"""A degraded demo store beside its clean twin: the same utterances, labels, sessions and speakers,
another fingerprint, its degradation shown by `cmarr-store info`, features independent of the
number of decoding workers, and training refused unless `--allow-degraded`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cmarr.extract.cli import app as extract_app
from cmarr.extract.corpora.demo import generate_demo_corpus
from cmarr.shared.cli import app as store_app
from cmarr.shared.errors import ConfigError
from cmarr.shared.store import FeatureStore
from cmarr.train.cli import train_app
from test_end_to_end import TINY
from typer.testing import CliRunner

pytestmark = pytest.mark.slow
runner = CliRunner()
SPEC = "audio:reverb=0.3,audio:snr=0,video:blur=2,video:occlude=0.2,text:word-drop=0.3,text:word-swap=0.2"


def _extract(corpus, out, *args):
    r = runner.invoke(extract_app, ["demo", "--out", str(out), "--corpus-dir", str(corpus), *args])
    assert r.exit_code == 0, r.output + "".join(__import__("traceback").format_exception(r.exception))
    return out / "demo.zarr"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(corpus, clean store, degraded store with 0 decoding workers, the same with 2)."""
    root = tmp_path_factory.mktemp("degrade")
    corpus = generate_demo_corpus(root / "corpus", utterances_per_dialog=4)
    common = ["--set", "extract.cpu_threads=1"]
    clean = _extract(corpus, root / "clean", *common, "--num-workers", "0")
    degraded = [_extract(corpus, root / f"noisy{w}", *common, "--num-workers", str(w), "--degrade", SPEC)
                for w in (0, 2)]  # fmt: skip
    return corpus, clean, *degraded


def test_the_degraded_store_holds_the_clean_ones_utterances_under_another_fingerprint(stores):
    _, clean_path, degraded_path, _ = stores
    clean, degraded = FeatureStore.open(clean_path), FeatureStore.open(degraded_path)
    for column in ("id", "label", "label_name", "session", "speaker", "split_group", "start", "end"):
        assert np.array_equal(clean.utterances[column], degraded.utterances[column]), column
    assert clean.fingerprint() != degraded.fingerprint()
    assert clean.degradation == {} and set(degraded.degradation) == {"audio", "video", "text"}
    assert degraded.degradation["audio"] == {
        "spec": "audio:reverb=0.3,audio:snr=0",
        "seed": 0,
        "noise": "white gaussian",
    }
    a, b = clean.modality("audio"), degraded.modality("audio")  # noise and reverberation: every utterance differs
    assert not any(np.array_equal(a.get(i), b.get(i)) for i in range(len(clean)) if b.present[i])
    # A short transcript can draw no drop and no swap (5 words at 0.3 and 0.2: about 1 in 18 keeps all
    # of them, Ses01F_impro01_M000 here): its features stay the clean ones. Most change.
    a, b = clean.modality("text"), degraded.modality("text")
    same = [i for i in range(len(clean)) if b.present[i] and np.array_equal(a.get(i), b.get(i))]
    assert len(same) <= 0.15 * b.present.sum(), same


def test_decoding_workers_change_no_degraded_feature(stores):
    _, _, zero, two = stores
    a, b = FeatureStore.open(zero), FeatureStore.open(two)
    for m in ("text", "audio", "video"):
        x, y = a.modality(m), b.modality(m)
        assert np.array_equal(x.status, y.status) and np.array_equal(x.load_all(), y.load_all()), m
    assert a.degradation == b.degradation


def test_a_dask_cluster_degrades_as_one_process(stores, tmp_path):
    corpus, _, zero, _ = stores
    same = ["--set", "extract.cpu_threads=1", "--set", "extract.device=cpu", "--set", "extract.shard_batches=1"]
    on_cluster = _extract(corpus, tmp_path, *same, "--cluster", "local:2", "--degrade", SPEC)
    a, b = FeatureStore.open(zero), FeatureStore.open(on_cluster)
    for m in ("text", "audio", "video"):
        x, y = a.modality(m), b.modality(m)
        assert np.array_equal(x.status, y.status) and np.array_equal(x.load_all(), y.load_all()), m


def test_store_info_shows_the_degradation(stores):
    _, clean, degraded, _ = stores
    r = runner.invoke(store_app, ["info", str(degraded), "--quick"])
    assert r.exit_code == 0 and "degraded" in r.stdout and "video:occlude=0.2,video:blur=2" in r.stdout
    info = json.loads(runner.invoke(store_app, ["info", str(degraded), "--json", "--quick"]).stdout)
    assert info["provenance"]["degradation"]["text"] == {"spec": "text:word-drop=0.3,text:word-swap=0.2", "seed": 0}
    assert "degraded" not in runner.invoke(store_app, ["info", str(clean), "--quick"]).stdout


def test_training_refuses_a_degraded_store_unless_asked(stores, tmp_path):
    _, _, degraded, _ = stores
    args = ["--store", str(degraded), "--preset", "fast", "--epochs", "1", "--only-folds", "1",
            "--out", str(tmp_path), "--set", "train.device=cpu", *TINY]  # fmt: skip
    refused = runner.invoke(train_app, args)
    assert refused.exit_code == 2 and "--allow-degraded" in refused.output and not any(tmp_path.iterdir())
    trained = runner.invoke(train_app, [*args, "--allow-degraded"])
    assert trained.exit_code == 0, trained.output
    [run] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert "trained on a degraded store" in (run / "results.md").read_text()


def test_a_store_is_resumed_only_with_its_own_degradation(stores):
    corpus, clean, degraded, _ = stores
    for path, args in ((clean, ["--degrade", "audio:snr=10"]), (degraded, []), (degraded, ["--degrade-seed", "1"])):
        r = runner.invoke(extract_app, ["demo", "--out", str(path.parent), "--corpus-dir", str(corpus), *args])
        assert r.exit_code == 1 and "separate stores" in r.output, r.output
    again = runner.invoke(extract_app, ["demo", "--out", str(degraded.parent), "--corpus-dir", str(corpus),
                                        "--degrade", SPEC.replace(",", " , "), "--num-workers", "0"])  # fmt: skip
    assert again.exit_code == 0 and "encoded now" in again.output  # the same spec: resumed, nothing to do


def test_a_bad_spec_stops_before_the_corpus_is_made(tmp_path):
    r = runner.invoke(extract_app, ["demo", "--out", str(tmp_path / "out"), "--degrade", "audio:snr=0,video:fog=1"])
    assert r.exit_code == 2 and "video:fog" in r.output and not (tmp_path / "out").exists()


def test_the_harness_folds_refuse_a_degraded_store_unless_asked(stores):
    """`cmarr.folds`, a researcher's own loop, refuses what cmarr-train refuses."""
    from cmarr import folds

    _, clean, degraded, _ = stores
    with pytest.raises(ConfigError, match="--allow-degraded"):
        folds(degraded)
    with pytest.warns(UserWarning, match="trained on a degraded store"):
        allowed = folds(degraded, allow_degraded=True)
    assert [f.name for f in allowed] == [f.name for f in folds(clean)]
