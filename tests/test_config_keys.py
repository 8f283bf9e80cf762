"""Every config key is read by the code it configures: a key that nothing reads is a setting that
silently does nothing (as `store.dtype` and `store.dir` once did)."""

from __future__ import annotations

import ast
from pathlib import Path

from cmarr.shared.config import config_keys

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("extract", "train", "shared", "predict")
DEFINITIONS = {ROOT / "shared" / "config.py", ROOT / "shared" / "train_config.py", ROOT / "shared" / "sections.py"}
# Keys read by name through a loop or a mapping rather than as attributes, with where they are read.
READ_INDIRECTLY: dict[str, str] = {}


def _names_read() -> set[str]:
    """Attribute names accessed (`cfg.x.lr`) and string constants (`getattr(cfg, "lr")`, a key
    path `"train.cm_arr.optim.lr"` split on dots) anywhere outside the config's definitions."""
    names: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path in DEFINITIONS:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                    names.add(node.attr)
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    names.update(node.value.split("."))
    return names


def test_every_config_key_is_read_outside_its_definition():
    read = _names_read()
    keys = config_keys()
    assert len(keys) > 100  # the walk reached every section, including each system's
    unread = [k for k in keys if k.rsplit(".", 1)[-1] not in read and k not in READ_INDIRECTLY]
    assert not unread, f"config keys that no code reads: {unread}"


def test_the_check_finds_an_unread_key():
    """The walk above would catch a key nobody reads (the test can fail)."""
    assert "a_key_nothing_reads" not in _names_read()
