"""pipeline.toml: the shipped file is the defaults; typos and wrong types fail naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cmarr.shared.config import PipelineConfig, load_config, parse_override, to_toml
from cmarr.shared.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_shipped_pipeline_toml_equals_the_documented_defaults():
    assert load_config(REPO / "pipeline.toml") == PipelineConfig()


def test_paper_settings_are_the_defaults():
    c = PipelineConfig()
    o = c.train.cm_arr.optim
    assert (o.lr, o.batch_size, o.epochs) == (1e-5, 16, 100)
    assert (c.train.cm_arr.loss.alpha, c.train.cm_arr.loss.beta, c.train.cm_arr.loss.lambda_rec) == (1.0, 0.1, 10.0)
    assert c.extract.text.model == "bert-base-uncased" and c.extract.audio.model == "facebook/wav2vec2-base"


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[extract.text]\nmodle = 'x'\n")
    with pytest.raises(ConfigError, match=r"p\.toml: invalid config\n  extract\.text\.modle: unknown key"):
        load_config(path)


def test_an_unknown_key_suggests_where_it_lives():
    """A key that moved (one per system since the comparison systems) or a typo points at the keys meant."""
    with pytest.raises(
        ConfigError, match=r"train\.patience: unknown key \(did you mean train\.cm_arr\.optim\.patience, "
    ):
        load_config(overrides={"train.patience": 5})
    with pytest.raises(ConfigError, match=r"extract\.text\.modle: unknown key \(did you mean extract\.text\.model[,?]"):
        load_config(overrides={"extract.text.modle": "x"})
    with pytest.raises(ConfigError, match=r"  zzz: unknown key$"):  # nothing close: no guess
        load_config(overrides={"zzz": 1})


def test_wrong_type_names_the_key(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[train.cm_arr.optim]\nbatch_size = 'sixteen'\n")
    with pytest.raises(ConfigError, match=r"train\.cm_arr\.optim\.batch_size: .*sixteen"):
        load_config(path)


def test_invalid_toml_is_a_config_error(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_overrides_apply_and_validate():
    cfg = load_config(
        REPO / "pipeline.toml",
        dict([parse_override("train.cm_arr.optim.lr=3e-4"), parse_override("extract.device=cuda:1")]),
    )
    assert cfg.train.cm_arr.optim.lr == 3e-4 and cfg.extract.device == "cuda:1"
    with pytest.raises(ConfigError, match=r"^--set: invalid config\n  train.cm_arr.optim.epochs") as err:
        load_config(REPO / "pipeline.toml", {"train.cm_arr.optim.epochs": -1})
    assert "pipeline.toml" not in str(err.value)  # the file is fine: the fault is blamed on --set
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("train.lr")


def test_resolved_toml_roundtrips(tmp_path):
    cfg = load_config(None, {"train.seed": 7})
    path = tmp_path / "resolved.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg


def test_a_partial_section_keeps_the_systems_own_defaults(tmp_path):
    """Overriding one key of a system's optimiser keeps that system's other published settings."""
    cfg = load_config(None, {"train.mmin.optim.lr": 1e-3, "train.cm_arr.optim.epochs": 7})
    default = PipelineConfig()
    assert cfg.train.mmin.optim.lr == 1e-3
    assert cfg.train.mmin.optim.model_copy(update={"lr": default.train.mmin.optim.lr}) == default.train.mmin.optim
    assert (cfg.train.cm_arr.optim.optimizer, cfg.train.cm_arr.optim.clip, cfg.train.cm_arr.optim.epochs) == (
        "adamw",
        1.0,
        7,
    )
    path = tmp_path / "p.toml"
    path.write_text("[train.cif_mmin.pretrain]\nbatch_size = 32\n")
    part = load_config(path).train.cif_mmin.pretrain
    assert part.batch_size == 32 and part.epochs == default.train.cif_mmin.pretrain.epochs == 30
