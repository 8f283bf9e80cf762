"""GCNet on cmarr's store: batches of whole dialogs in time order, the graph's edges and relations,
its per-epoch training masks, evaluation of whole dialogs, the parameter count of the authors'
model, the published recon-mask switch the parity record needs, and one tiny training run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cmarr.shared.store import FeatureStore
from cmarr.shared.store.synthetic import SyntheticModality, write_synthetic_store
from cmarr.shared.train_config import TrainConfig
from cmarr.train.batch import Batch
from cmarr.train.cli import train_app
from cmarr.train.data import StoreData
from cmarr.train.evaluation import predict_proba
from cmarr.train.missing import MISSING, build_sampler
from cmarr.train.model.gcnet import GCNet, GCNetModel, dialog_edges, dialog_layout
from cmarr.train.systems import get_system
from typer.testing import CliRunner

from tests import test_parity

MODS = {"text": SyntheticModality(4, 3), "audio": SyntheticModality(6, 4), "video": SyntheticModality(3, 2)}
TINY = GCNetModel(hidden=8)
# GraphModel('LSTM', 768, 768, 342, D_e=200, graph 100, 2 speakers, 4 classes).parameters(), counted by
# bench/parity/record_gcnet.py against cmarr's model (its assert)
AUTHORS_PARAMETERS = 31_887_882


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("gcnet") / "s.zarr"
    write_synthetic_store(path, 60, MODS, dtype="float32", seed=7, class_signal=0.8)
    return StoreData(FeatureStore.open(path))


def test_the_parameter_count_is_the_authors_at_cmarrs_sizes():
    model = get_system("gcnet", TrainConfig()).stages[-1].build({"text": 768, "audio": 768, "video": 342}, 4)
    assert sum(p.numel() for p in model.trainable_parameters()) == AUTHORS_PARAMETERS


def test_dialogs_are_whole_in_time_order_and_every_row_is_batched_once(data):
    rows = np.arange(len(data))
    groups = data.dialogs(rows)
    codes, start = data.dialog_codes, np.asarray(data.store.utterances["start"])
    assert sorted(np.concatenate(groups).tolist()) == rows.tolist()
    for g in groups:
        assert len(set(codes[g])) == 1 and len(g) == int((codes == codes[g[0]]).sum())
        assert np.all(np.diff(start[g]) >= 0) and np.all(np.diff(g) > 0)  # equal starts: row order
    batches = data.dialog_batches(rows, 3, np.random.default_rng(0))
    assert len(batches) == -(-len(groups) // 3)
    assert sorted(np.concatenate(batches).tolist()) == rows.tolist()


def test_a_dialog_batch_carries_dialog_and_speaker(data):
    groups = data.dialogs(np.arange(len(data)))[:2]
    idx = np.concatenate(groups)
    given = {m: np.ones(len(idx), bool) for m in data.dims}
    batch = data.batch(idx, given, data.normaliser(idx), "cpu", dialogs=True)
    assert batch.dialog.tolist() == [0] * len(groups[0]) + [1] * len(groups[1])
    speakers = np.asarray(data.store.utterances["speaker"], dtype=object).astype(str)[idx]
    for d in range(len(groups)):
        ranks = np.unique(speakers[batch.dialog.numpy() == d], return_inverse=True)[1]
        assert batch.speaker[batch.dialog == d].tolist() == ranks.tolist()
    assert data.batch(idx, given, data.normaliser(idx), "cpu").dialog is None  # other systems: unchanged


def test_edges_follow_the_window_and_the_relations():
    dialog, speaker = torch.tensor([0, 0, 0, 0, 1, 1]), np.array([0, 1, 1, 0, 1, 0])
    b = Batch({}, {}, {"text": torch.ones(6, dtype=torch.bool)}, {}, torch.zeros(6, dtype=torch.long), dialog)
    layout = dialog_layout(b)
    assert layout[0].tolist() == [0, 1, 2, 3, 0, 1] and layout[2:] == (4, 2)
    (src, dst, rel), (_, _, spk) = dialog_edges(layout, speaker, 1, 2, 2, "cpu")
    pairs = set(zip(src.tolist(), dst.tolist()))
    expected = {(j, i) for lo, hi in ((0, 4), (4, 6)) for j in range(lo, hi) for i in range(lo, hi) if -1 <= i - j <= 2}
    assert pairs == expected
    for j, i, r, s in zip(src.tolist(), dst.tolist(), rel.tolist(), spk.tolist()):
        assert r == (0 if i > j else 1 if i == j else 2)
        assert s == speaker[i] * 2 + speaker[j]


def test_the_epoch_rate_sampler_keeps_one_modality_and_draws_anew(data):
    sampler = build_sampler("epoch-rate", rate=0.5)
    rng = np.random.default_rng(0)
    batches = data.dialog_batches(np.arange(len(data)), 4, rng)
    first, second = sampler.draw(data.present, batches, rng), sampler.draw(data.present, batches, rng)
    for draw in (first, second):
        keep = np.concatenate([np.stack([d[m] for m in data.dims], 1) for d in draw])
        assert keep.any(1).all() and 0.3 < keep.mean() < 0.8
    assert any(not np.array_equal(a[m], b[m]) for a, b in zip(first, second) for m in data.dims)


def test_evaluation_reads_each_dialog_whole_and_never_a_dropped_modality(data):
    """A row's prediction under a condition is the one of its whole dialog, whatever else is asked;
    noise in the dropped modality's features changes nothing."""
    torch.manual_seed(0)
    model = GCNet(data.dims, 4, TINY).eval()
    norm = data.normaliser(np.arange(len(data)))
    group = data.dialogs(np.arange(len(data)))[0]
    cond = MISSING[0]  # {t}
    cpu = torch.device("cpu")
    rows, alone = predict_proba(model, data, group[:2], cond, norm, cpu)
    _, together = predict_proba(model, data, np.arange(len(data)), cond, norm, cpu)
    assert rows.tolist() == group[:2].tolist()
    np.testing.assert_allclose(alone, together[group[:2]], atol=1e-6)
    given = {m: np.full(len(group), m in cond.given) for m in data.dims}
    clean = data.batch(group, given, norm, "cpu", dialogs=True)
    noisy = Batch(dict(clean.x), dict(clean.mask), clean.given, clean.known, clean.labels, clean.dialog, clean.speaker)
    noisy.x["audio"] = 50 * torch.randn(len(group), 9, data.dims["audio"])
    noisy.mask["audio"] = torch.ones(len(group), 9, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(model(clean).logits, model(noisy).logits)


def test_the_record_tells_the_published_recon_mask_apart():
    """cmarr's default (the paper's loss: every dropped utterance) differs from the recorded peer's
    on the case's conversations of unequal length: the published switch is needed for parity."""
    meta, record = test_parity._load("gcnet")
    meta = {**meta, "switches": {}}
    _, _, terms, _ = test_parity._cmarr(meta)
    assert abs(terms["recon"].item() - float(record["loss.recon"])) > 100 * test_parity.TOL
    assert abs(terms["ce"].item() - float(record["loss.ce"])) < test_parity.TOL


def test_it_trains_and_writes_the_table(data, tmp_path, cpu_bf16):
    """One epoch, selection and test predictions over whole dialogs, under CPU bf16 autocast."""
    args = ["--store", str(data.store.location), "--folds", "5", "--out", str(tmp_path), "--system", "gcnet",
            "--set", "train.device=cpu", "--set", "train.amp=bf16", "--set", "train.gcnet.optim.epochs=1",
            "--set", "train.gcnet.optim.batch_size=2", "--set", "train.gcnet.model.hidden=8"]  # fmt: skip
    r = CliRunner().invoke(train_app, args)
    assert r.exit_code == 0, r.output
    assert cpu_bf16  # the loops ran under autocast
    [run] = [p for p in tmp_path.iterdir() if p.is_dir()]
    md = (run / "results.md").read_text().split("\n## ")[0]
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith(("| {", "| Avg"))]
    assert rows == ["{t}", "{s}", "{v}", "{v,t}", "{s,v}", "{s,t}", "Avg.", "{s,v,t}"]
    assert json.loads((run / "system.json").read_text())["system"] == "gcnet"


def test_a_synthetic_store_can_hold_dialogs_of_iemocaps_size():
    """bench/train_gpu.py's store: dialogs of at most `dialog_size` utterances of one session, two
    speakers each; without it the two dialogs a session of every test store."""
    from cmarr.shared.store.synthetic import synthetic_table

    def dialogs(table):
        rows = {}
        for d, session, speaker in zip(table["dialog"], table["session"], table["speaker"], strict=True):
            rows.setdefault(d, []).append((session, speaker))
        return rows

    sized = dialogs(synthetic_table(4425, dialog_size=66))
    assert len(sized) == 70 and max(len(r) for r in sized.values()) == 66
    assert all(len({s for s, _ in r}) == 1 and len({p for _, p in r}) == 2 for r in sized.values())
    assert sorted(dialogs(synthetic_table(4425))) == sorted(f"Ses{s:02d}{g}_synth" for s in range(1, 6) for g in "FM")
