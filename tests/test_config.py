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
    assert (c.train.lr, c.train.batch_size, c.train.epochs) == (1e-5, 16, 100)
    assert (c.train.loss.alpha, c.train.loss.beta, c.train.loss.lambda_rec) == (1.0, 0.1, 10.0)
    assert c.extract.text.model == "bert-base-uncased" and c.extract.audio.model == "facebook/wav2vec2-base"


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[extract.text]\nmodle = 'x'\n")
    with pytest.raises(ConfigError, match=r"p\.toml: invalid config\n  extract\.text\.modle: unknown key"):
        load_config(path)


def test_wrong_type_names_the_key(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[train]\nbatch_size = 'sixteen'\n")
    with pytest.raises(ConfigError, match=r"train\.batch_size: .*sixteen"):
        load_config(path)


def test_invalid_toml_is_a_config_error(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_overrides_apply_and_validate():
    cfg = load_config(
        REPO / "pipeline.toml", dict([parse_override("train.lr=3e-4"), parse_override("extract.device=cuda:1")])
    )
    assert cfg.train.lr == 3e-4 and cfg.extract.device == "cuda:1"
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(REPO / "pipeline.toml", {"train.epochs": -1})
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("train.lr")


def test_resolved_toml_roundtrips(tmp_path):
    cfg = load_config(None, {"train.seed": 7})
    path = tmp_path / "resolved.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg
