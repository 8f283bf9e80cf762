"""With the published encoders (`train.mmin_family.masked_pooling = false`), evaluation gives a
dropped modality as the peers' datasets do (AIM3-RUC/MMIN data/multimodal_miss_dataset.py: the
features times the mask, their length kept) and as training does: zeros of the recording's length,
the batch padded to its longest recording, not one zero step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cmarr.shared.modalities import MODALITIES
from cmarr.shared.store import FeatureStore
from cmarr.shared.store.synthetic import SyntheticModality, write_synthetic_store
from cmarr.shared.train_config import TrainConfig
from cmarr.train.data import StoreData
from cmarr.train.evaluation import predict_proba
from cmarr.train.missing import MissingCondition
from cmarr.train.model.base import reads_padding
from cmarr.train.systems import get_system

MODS = {"text": SyntheticModality(4, 3), "audio": SyntheticModality(6, 4), "video": SyntheticModality(3, 2)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("len") / "s.zarr"
    write_synthetic_store(path, 24, MODS, dtype="float32", seed=3)
    return StoreData(FeatureStore.open(path))


def _model(system: str, masked: bool):
    cfg = TrainConfig().model_dump()
    cfg["mmin_family"].update(embedding=8, cls_layers=[8, 8], masked_pooling=masked)
    cfg["mmin"].update(ae_layers=[16, 8], blocks=2)
    torch.manual_seed(0)
    return get_system(system, TrainConfig.model_validate(cfg)).stages[-1].build(data_dims(), 4).eval()


def data_dims():
    return {m: MODS[m].dim for m in MODALITIES}


@pytest.mark.parametrize("system", ["utt-fusion", "mmin"])
@pytest.mark.parametrize("dropped", ["audio", "text", "video"])
def test_a_dropped_modality_is_zeros_of_its_length_as_the_peer_gives_it(data, system, dropped):
    model = _model(system, masked=False)
    assert reads_padding(model)
    condition = MissingCondition(frozenset(MODALITIES) - {dropped})
    norm = data.normaliser(np.arange(len(data)))
    rows, probs = predict_proba(model, data, np.arange(len(data)), condition, norm, torch.device("cpu"), batch_size=8)
    peer, one_step = [], []
    for lo in range(0, len(rows), 8):
        idx = rows[lo : lo + 8]
        given = {m: np.full(len(idx), m in condition.given) for m in MODALITIES}
        every = {m: np.ones(len(idx), bool) for m in MODALITIES}
        with torch.no_grad():  # the peer: every true feature loaded, the dropped one multiplied by 0
            full = data.batch(idx, given, norm, "cpu", known=every)
            assert full.x[dropped].shape[1] == data.lengths[dropped][idx].max() > 1
            peer.append(model(full).logits.softmax(-1).numpy())
            one_step.append(model(data.batch(idx, given, norm, "cpu")).logits.softmax(-1).numpy())
    assert np.allclose(probs, np.concatenate(peer), atol=1e-6)
    if dropped != "text":  # an LSTM's state moves over zero steps (a TextCNN's windows of zeros are all alike)
        assert np.abs(probs - np.concatenate(one_step)).max() > 1e-5  # what evaluation gave before


def test_masked_encoders_keep_the_one_zero_step(data):
    model = _model("mmin", masked=True)
    assert not reads_padding(model)
    idx = np.arange(6)
    given = {m: np.full(6, m != "audio") for m in MODALITIES}
    norm = data.normaliser(np.arange(len(data)))
    assert data.batch(idx, given, norm, "cpu", full_length=reads_padding(model)).x["audio"].shape[1] == 1
