"""Systems as plugins: one registration, no other system's run id moved, clear errors naming the plugin."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cmarr.shared.config import PipelineConfig, load_config, with_overrides
from cmarr.shared.errors import ConfigError
from cmarr.shared.train_config import SECTIONS, TrainConfig
from cmarr.train import systems
from cmarr.train.cli import several_sets
from cmarr.train.presets import rescheduled
from cmarr.train.run import run_hash
from cmarr.train.systems import registry
from training import last_run, train

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_system.py"
QUICK = ["--only-folds", "1", "--epochs", "2", "--set", "train.device=cpu", "train.amp=none"]


@pytest.fixture
def registry_restored():
    """Plugins registered by a test are gone after it (the registry is process-wide)."""
    saved = dict(registry.SYSTEMS), dict(SECTIONS), dict(registry.PLUGIN_FILES)
    modules = set(sys.modules)
    yield
    for target, before in zip((registry.SYSTEMS, SECTIONS, registry.PLUGIN_FILES), saved):
        target.clear()
        target.update(before)
    for name in set(sys.modules) - modules:
        if name.startswith("cmarr_plugin_"):
            del sys.modules[name]


def _write_plugin(tmp_path: Path, body: str, name: str = "plugin_under_test") -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(
        EXAMPLE.read_text().replace('"my-system"', '"other-system"').replace("my_system", "other_system") + body
    )
    return path


def test_registering_a_plugin_changes_no_other_systems_run_id(registry_restored):
    cfg = PipelineConfig()
    before = {name: run_hash(cfg, systems.get_system(name, cfg.train)) for name in systems.SYSTEMS}
    assert systems.load_plugin(str(EXAMPLE)) == ["my-system"]
    cfg = PipelineConfig()  # now with [train.my_system] and its defaults
    assert cfg.train.my_system.hidden == 128
    after = {name: run_hash(cfg, systems.get_system(name, cfg.train)) for name in before}
    assert after == before
    other = with_overrides(cfg, {"train.my_system.hidden": 64})  # the plugin's own settings move only its id
    assert run_hash(other, systems.get_system("my-system", other.train)) != run_hash(
        cfg, systems.get_system("my-system", cfg.train)
    )
    assert {n: run_hash(other, systems.get_system(n, other.train)) for n in before} == before
    assert systems.SYSTEMS["my-system"].source == f"plugin {EXAMPLE}"


def test_the_example_stays_small():
    assert len(EXAMPLE.read_text().splitlines()) < 80


def test_a_section_nobody_registered_is_refused_naming_it(tmp_path, registry_restored):
    config = tmp_path / "p.toml"
    config.write_text("[train.my_system]\nhidden = 64\n")
    with pytest.raises(ConfigError, match=r"train\.my_system: unknown key"):
        load_config(config)
    systems.load_plugin(str(EXAMPLE))
    assert load_config(config).train.my_system.hidden == 64
    with pytest.raises(ConfigError, match=r"train\.my_system\.hiden: unknown key"):
        load_config(config, {"train.my_system.hiden": 3})


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (
            "\nraise RuntimeError('broken on import')\n",
            r"--plugin .*plugin_under_test\.py: importing it failed.*broken",
        ),
        (
            "\nregister_system('bad-fast', other_system, reads=('other_system',),"
            " fast={'train.other_system.optim.epoks': 1})\n",
            r"system 'bad-fast' \(registered by .*plugin_under_test\.py\): preset key .*has no key 'optim\.epoks'",
        ),
        (
            "\nregister_system('cm-arr', other_system)\n",
            r"system 'cm-arr' .*the name is taken by cmarr\.train\.systems\.cmarr",
        ),
        (
            "\nregister_system('bad-reads', other_system, reads=('nowhere',))\n",
            r"reads unregistered config section\(s\) nowhere",
        ),
    ],
)
def test_a_broken_plugin_is_a_clear_error_naming_it(tmp_path, registry_restored, body, match):
    with pytest.raises(ConfigError, match=match):
        systems.load_plugin(str(_write_plugin(tmp_path, body)))


def test_a_builder_that_raises_names_the_plugin(tmp_path, registry_restored):
    body = "\ndef broken(cfg):\n    raise ValueError('no stages today')\n\nregister_system('broken', broken)\n"
    systems.load_plugin(str(_write_plugin(tmp_path, body)))
    with pytest.raises(
        ConfigError, match=r"system 'broken' \(plugin .*plugin_under_test\.py\): building it failed.*no stages"
    ):
        systems.get_system("broken", TrainConfig())


@pytest.mark.slow
def test_a_plugin_trains_beside_a_built_in_and_its_divergence_loses_nothing(small_store, tmp_path, registry_restored):
    """my-system trains beside utt-fusion through --plugin; a plugin whose loss turns NaN stops
    itself only, named, with the other systems' reports and the comparison written (exit 1)."""
    store, _ = small_store
    body = (
        "\nclass NaNLoss(LateFusion):\n    def losses(self, batch, out):\n"
        "        return {'ce': super().losses(batch, out)['ce'] * float('nan')}\n\n"
        "def nan_system(cfg):\n    stage = Stage('nan-system', lambda d, k: NaNLoss(d, k, cfg.other_system), "
        "cfg.other_system.optim, {'ce': 1.0})\n    return System('nan-system', 'NaN', (stage,))\n\n"
        "register_system('nan-system', nan_system, reads=('other_system',))\n"
    )
    plugin = _write_plugin(tmp_path, body)
    ok = train(store, tmp_path / "ok", "--plugin", str(EXAMPLE), "--systems", "my-system,utt-fusion", *QUICK)
    assert "comparison:" in ok.output
    run = last_run(tmp_path / "ok")
    assert json.loads((run / "system.json").read_text())["system"] == "utt-fusion"
    assert "my_system" not in (run / "config.toml").read_text()  # a built-in run never needs the plugin
    r = train(store, tmp_path / "nan", "--plugin", str(plugin), "--systems", "nan-system,utt-fusion", *QUICK, expect=1)
    assert "nan-system (plugin" in r.output and "plugin_under_test.py" in r.output and "non-finite" in r.output
    assert "reports written for utt-fusion" in r.output
    assert (last_run(tmp_path / "nan") / "results.md").is_file()


def test_several_values_after_one_set():
    assert several_sets(["run", "--set", "a=1", "b=2", "--out", "x", "--set", "c=3"]) == [
        "run", "--set", "a=1", "--set", "b=2", "--out", "x", "--set", "c=3",
    ]  # fmt: skip


def test_one_knob_reschedules_every_stage_of_every_system():
    cfg = PipelineConfig()
    for n in (1, 3, 10):
        quick = rescheduled(cfg, epochs=n)
        for _, optim in _optims(quick):
            assert optim.epochs + optim.decay_epochs == n and optim.epochs >= 1
    tenth = rescheduled(cfg, scale=0.1)
    assert (tenth.train.cm_arr.optim.epochs, tenth.train.cm_arr.optim.patience) == (10, 1)
    assert (tenth.train.mmin.optim.epochs, tenth.train.mmin.optim.decay_epochs) == (3, 3)
    # every registered system's stages: two each for IF-, CIF-MMIN, DiCMoR, IMDer and MPLMM; one for GCNet, LNLN
    assert len(_optims(cfg)) == 16
    with pytest.raises(ConfigError, match="not both"):
        rescheduled(cfg, epochs=1, scale=0.5)


def _optims(cfg: PipelineConfig):
    from cmarr.train.presets import _stage_optims

    return _stage_optims(cfg.train)


@pytest.mark.slow
def test_resume_trains_a_system_that_has_no_run_yet(small_store, tmp_path):
    store, _ = small_store
    train(store, tmp_path, "--system", "utt-fusion", *QUICK)
    first = last_run(tmp_path)
    done = (first / "ledger.jsonl").read_text()
    r = train(store, tmp_path, "--systems", "utt-fusion,cra", "--resume", *QUICK)
    assert "--resume: cra has no run yet" in r.output and "comparison:" in r.output
    assert (first / "ledger.jsonl").read_text() == done  # utt-fusion's finished job was not trained again
    r = train(store, tmp_path / "empty", "--systems", "utt-fusion,cra", "--resume", *QUICK, expect=2)
    assert "--resume: no run at" in r.output


@pytest.mark.slow
def test_a_system_that_cannot_train_on_the_store_is_skipped_with_its_reason(tmp_path):
    """On a store where no utterance has video, the complete-data systems never train on nothing:
    skipped, said, and named in table2 with why; the others train and the comparison is written."""
    from cmarr.shared.store.synthetic import SyntheticModality, write_synthetic_store

    mods = {
        "text": SyntheticModality(5, 6),
        "audio": SyntheticModality(12, 8),
        "video": SyntheticModality(4, 5, missing_rate=1.0),
    }
    store = tmp_path / "no_video.zarr"
    write_synthetic_store(store, 60, mods, dtype="float32", seed=2)
    r = train(store, tmp_path / "runs", "--systems", "utt-fusion,cra,mmin", *QUICK)
    reason = "not trained: its stage utt-fusion needs complete utterances, and no training utterance has video"
    assert f"warning: utt-fusion: {reason}" in r.output and f"warning: mmin: {reason}" in r.output
    table = json.loads(next((tmp_path / "runs").glob("*-comparison-*/table2.json")).read_text())
    assert table["systems"] == ["cra"] and set(table["skipped"]) == {"utt-fusion", "mmin"}
    assert reason in next((tmp_path / "runs").glob("*-comparison-*/table2.md")).read_text()
    r = train(store, tmp_path / "alone", "--system", "utt-fusion", *QUICK, expect=1)
    assert reason in r.output
