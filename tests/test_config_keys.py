"""Every config key is read by the code it configures: a key that nothing reads is a setting that
silently does nothing (as `store.dtype` and `store.dir` once did). What counts as a read of a key,
and not merely of a name other keys share, is decided in tests/config_reads.py."""

from __future__ import annotations

import ast

import cmarr.train.systems  # noqa: F401  (registers every built-in system's [train.*] section)
import pytest
from config_reads import Reads, Schema, parse_packages

# Keys read by name through a loop or a mapping rather than as attributes, with where they are read.
READ_INDIRECTLY: dict[str, str] = {}


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.of_config()


@pytest.fixture(scope="module")
def parsed() -> tuple[list, list]:
    return parse_packages()


@pytest.fixture(scope="module")
def reads(schema, parsed) -> Reads:
    return Reads(schema, *parsed)


def test_every_config_key_is_read_outside_its_definition(schema, reads):
    assert len(schema.keys) > 100  # the walk reached every section, including each system's
    unread = [k for k in schema.keys if not reads.evidence(k) and k not in READ_INDIRECTLY]
    assert not unread, f"config keys that no code reads (what a read is: tests/config_reads.py): {unread}"


def test_the_allow_list_names_keys_the_walk_cannot_see(schema, reads):
    for key in READ_INDIRECTLY:
        assert key in schema.keys and not reads.evidence(key), key


def test_a_removed_read_is_caught_though_other_keys_share_its_name(schema, parsed, reads):
    """Without the stage trainer's `optim.lr`, no StageOptim's lr is read: the check says so for
    each of them, while `lr` is still read elsewhere (fer.lr), which a check of names passed."""
    skip = frozenset(reads.own_sites("train.cm_arr.optim.lr"))
    without = Reads(schema, *parsed, skip=skip)
    lost = {k for k in schema.keys if reads.evidence(k) and not without.evidence(k)}
    stage_lrs = {f"{path}.lr" for path, cls in schema.paths.items() if cls == "StageOptim"}
    assert lost == stage_lrs and "train.dicmor.pretrain.lr" in lost
    assert without.evidence("fer.lr")


def test_a_section_nothing_reads_leaves_its_keys_unread(schema, parsed):
    """A StageOptim no system reads (train.cm_arr.warmup) is read by no stage: its lr is unread,
    though the lr of every StageOptim handed to a stage is read."""
    fields = {**schema.fields, "CMARRConfig": {**schema.fields["CMARRConfig"], "warmup": "StageOptim"}}
    paths = {**schema.paths, "train.cm_arr.warmup": "StageOptim"}
    reads = Reads(Schema(paths, fields, [*schema.keys, "train.cm_arr.warmup.lr"]), *parsed)
    assert not reads.evidence("train.cm_arr.warmup.lr") and reads.evidence("train.cm_arr.optim.lr")


def test_what_typed_and_untyped_reads_cover(schema):
    def covered(source: str) -> set[str]:
        reads = Reads(schema, [("x.py", ast.parse(source))])
        return {k for k in schema.keys if reads.evidence(k)}

    # untyped: two trailing config names cover every key ending so; one covers nothing
    assert covered("def f(c):\n    return c.optim.lr, c.lr\n") == {k for k in schema.keys if k.endswith(".optim.lr")}
    # typed: a StageOptim's lr, for the StageOptim sections read on their parents up to the root
    typed = "def f(o: StageOptim, t: TrainConfig, p: PipelineConfig):\n    return o.lr, t.dicmor.pretrain, p.train\n"
    assert covered(typed) == {"train.dicmor.pretrain.lr"}
