"""Both stages on a dask LocalCluster of 2 worker processes: the same store and the same results
as one process, a worker killed midway costs nothing but time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
from cmarr.extract.cli import app as extract_app
from cmarr.extract.corpora.demo import generate_demo_corpus
from cmarr.extract.corpora.iemocap import read_iemocap
from cmarr.shared.cluster import local_cluster
from cmarr.shared.config import load_config
from cmarr.shared.labels import get_label_set
from cmarr.shared.store import FeatureStore, Status, verify_store
from cmarr.shared.store.synthetic import SyntheticModality, write_synthetic_store
from cmarr.train.cli import train_app
from test_extract_demo import _damage
from test_train_protocol import TINY
from training import train
from typer.testing import CliRunner

pytestmark = pytest.mark.slow  # local dask clusters: tens of seconds per test
runner = CliRunner()
# CPU float results depend on the torch thread count; both sides fix it to compare bit for bit.
SAME = ["--set", "extract.device=cpu", "--set", "extract.cpu_threads=1", "--set", "extract.shard_batches=1"]


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with local_cluster(2) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """A demo corpus with one truncated wav, an undecodable avi, an empty transcript and a
    face-less video, and its single-process store."""
    root = tmp_path_factory.mktemp("dist")
    corpus = generate_demo_corpus(root / "corpus", utterances_per_dialog=4)
    _damage(corpus)
    result = runner.invoke(
        extract_app, ["demo", "--out", str(root / "single"), "--corpus-dir", str(corpus), "--num-workers", "0", *SAME]
    )
    assert result.exit_code == 3, result.output  # the damaged items failed, the rest went on
    return corpus, root / "single" / "demo.zarr"


def _assert_same_store(a_path, b_path, modalities=("text", "audio", "video")):
    a, b = FeatureStore.open(a_path), FeatureStore.open(b_path)
    assert a.utterances["id"].tolist() == b.utterances["id"].tolist()
    for m in modalities:
        ra, rb = a.modality(m), b.modality(m)
        assert np.array_equal(ra.offsets, rb.offsets), m
        assert np.array_equal(ra.status, rb.status), m
        assert ra.load_all().tobytes() == rb.load_all().tobytes(), m
        assert a.root[m].attrs["failures"] == b.root[m].attrs["failures"], m


def test_cluster_extraction_equals_single_process(client, damaged, tmp_path):
    corpus, single = damaged
    result = runner.invoke(
        extract_app,
        ["demo", "--out", str(tmp_path), "--corpus-dir", str(corpus), "--scheduler", client.scheduler.address, *SAME],
    )
    assert result.exit_code == 3, result.output  # same exit code as the single-process run
    assert "items failed" in result.output
    path = tmp_path / "demo.zarr"
    assert verify_store(str(path)).ok
    _assert_same_store(path, single)
    store = FeatureStore.open(path)
    assert (store.modality("video").status == Status.NO_FACE).any()
    assert not (path / "video" / "_parts").exists()  # the driver finalized every modality

    # a re-run resumes: nothing is encoded again, the store stays the same
    again = runner.invoke(
        extract_app,
        ["demo", "--out", str(tmp_path), "--corpus-dir", str(corpus), "--scheduler", client.scheduler.address, *SAME],
    )
    assert again.exit_code == 3, again.output
    _assert_same_store(path, single)


def test_a_cluster_records_the_settings_as_given(client, damaged, tmp_path):
    """The same command makes the same store, print included, with or without a cluster: the
    cluster's executor resolves `auto` to its workers' device, which was recorded as the store's
    config (another print, so every run on it another run id, for the same features)."""
    corpus, _ = damaged
    same = ["--set", "extract.cpu_threads=1", "--set", "extract.shard_batches=1", "--num-workers", "0"]
    common = ["demo", "--corpus-dir", str(corpus), "--modalities", "text", *same]  # the default device: auto
    single = runner.invoke(extract_app, [*common, "--out", str(tmp_path / "a")])
    dist = runner.invoke(extract_app, [*common, "--out", str(tmp_path / "b"), "--scheduler", client.scheduler.address])
    assert single.exit_code == dist.exit_code, (single.output, dist.output)
    a, b = (FeatureStore.open(tmp_path / x / "demo.zarr") for x in "ab")
    assert 'device = "auto"' in a.attrs["config_toml"] and a.attrs["config_toml"] == b.attrs["config_toml"]
    assert a.fingerprint() == b.fingerprint()


def test_a_killed_worker_costs_only_its_shard(client, damaged, tmp_path):
    from cmarr.extract.encoders.demo_models import apply_profile
    from cmarr.extract.pipeline import extract_corpus
    from cmarr.shared.config import with_overrides

    corpus, single = damaged
    labels = get_label_set("4class")
    cfg = apply_profile(
        with_overrides(
            load_config(None),
            {"extract.profile": "demo", "extract.device": "cpu", "extract.cpu_threads": 1, "extract.shard_batches": 1},
        )
    )
    records = read_iemocap(corpus, labels).records
    path = tmp_path / "demo.zarr"
    done: dict = {}

    def run():
        try:
            done["reports"] = extract_corpus(records, path, "demo", labels, cfg, ["video"], executor=client).modalities
        except BaseException as err:  # surfaced below
            done["error"] = err

    pids = client.run(os.getpid)
    thread = threading.Thread(target=run)
    thread.start()
    victim, deadline = None, time.time() + 300
    while victim is None and time.time() < deadline and thread.is_alive():
        busy = {
            w: keys
            for w, keys in client.processing().items()
            if any(str(k).startswith("cmarr-extract-video") for k in keys)
        }
        victim = next(iter(busy), None)
        time.sleep(0.02)
    assert victim is not None, "no video shard was ever seen running"
    os.kill(pids[victim], signal.SIGKILL)  # the worker dies in the middle of its shard
    thread.join(600)
    assert "error" not in done, done.get("error")
    assert done["reports"][0].counts["pending"] == 0
    assert verify_store(str(path)).ok
    _assert_same_store(path, single, ["video"])


@pytest.fixture(scope="module")
def train_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("grid") / "s.zarr"
    mods = {
        "text": SyntheticModality(5, 6),
        "audio": SyntheticModality(12, 8),
        "video": SyntheticModality(4, 5, missing_rate=0.1),
    }
    write_synthetic_store(path, 100, mods, dtype="float32", seed=3, class_signal=0.8)
    return path


GRID = ["--folds", "5", "--seeds", "2", "--set", "train.cm_arr.optim.epochs=2", "--set", "train.cpu_threads=1", *TINY]


def test_cluster_grid_equals_sequential_and_skips_finished_jobs(client, train_store, tmp_path):
    train(train_store, tmp_path / "seq", *GRID)
    distributed = ["--scheduler", client.scheduler.address, "--ablations", "baseline"]
    output = train(train_store, tmp_path / "dist", *GRID, *distributed).output
    assert "[20/20]" in output  # 2 variants x 2 seeds x 5 folds, one job each
    [seq] = list((tmp_path / "seq").iterdir())
    [dist] = [
        p for p in (tmp_path / "dist").iterdir() if p.is_dir() and "-cm-arr-" in p.name and "-ablations-" not in p.name
    ]
    assert json.loads((dist / "results.json").read_text()) == json.loads((seq / "results.json").read_text())
    ledger = [json.loads(line) for line in (dist / "ledger.jsonl").read_text().splitlines()]
    assert sorted(e["job"] for e in ledger) == sorted(
        f"cm-arr/seed{s}/fold{k}/split0" for s in (0, 1) for k in range(1, 6)
    )
    assert {e["worker"] for e in ledger} <= set(client.scheduler_info()["workers"])
    table = next((tmp_path / "dist").glob("synthetic-ablations-*/table3.md")).read_text()
    assert "| cm-arr |" in table and "| baseline |" in table

    # a re-run with --resume submits nothing and writes the same reports
    shutil.rmtree(dist / "confusion")
    again = train(train_store, tmp_path / "dist", *GRID, *distributed, "--resume").output
    assert "[1/" not in again
    assert len((dist / "ledger.jsonl").read_text().splitlines()) == 10
    assert (dist / "confusion" / "svt.png").is_file()
    assert json.loads((dist / "results.json").read_text()) == json.loads((seq / "results.json").read_text())


def test_bad_cluster_options_are_usage_errors(train_store, tmp_path):
    from cmarr.shared.cluster import parse_local
    from cmarr.shared.errors import ConfigError

    assert parse_local("local:3") == 3
    for bad in ("local", "local:0", "tcp://x:1", "local:two"):
        with pytest.raises(ConfigError, match="use local:N"):
            parse_local(bad)
    base = ["--store", str(train_store), "--folds", "5", "--out", str(tmp_path), *TINY]
    for extra, message in (
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--ablations", "baseline,nonsense"], "unknown system(s) nonsense"),
        (["--jobs", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
    ):
        result = runner.invoke(train_app, base + extra)
        assert result.exit_code == 2 and message in result.output, result.output
    assert not any(tmp_path.iterdir())  # nothing was started or written


def test_the_workers_gpu_resources_decide_the_device():
    from cmarr.shared.cluster import cluster_device, require_gpu_workers
    from cmarr.shared.errors import ConfigError

    class Client:  # what scheduler_info reports, without a cluster
        def __init__(self, *resources):
            self.workers = {f"tcp://w{k}": {"resources": r} for k, r in enumerate(resources)}

        def scheduler_info(self, n_workers=-1):
            return {"workers": self.workers}

    cpu, gpu = Client({}, {}), Client({}, {"GPU": 1})
    assert cluster_device(cpu, "auto") == "cpu" and cluster_device(gpu, "auto") == "cuda"
    assert cluster_device(cpu, "cuda:1") == "cuda" and cluster_device(gpu, "cpu") == "cpu"
    require_gpu_workers(gpu, True)
    require_gpu_workers(cpu, False)
    with pytest.raises(ConfigError, match="no dask worker declares a GPU resource"):
        require_gpu_workers(cpu, True)
