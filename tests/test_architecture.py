"""The architecture as contracts: the layers, one owner of the run directory's file names, and the
sizes STYLE.md asks for (checked on the source, so a change that breaks one fails here)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shared", "extract", "train", "predict")
# what each layer may not import: shared neither stage; the stages not each other; nothing the composer
FORBIDDEN = {
    "shared": ("cmarr.extract", "cmarr.train", "cmarr.predict"),
    "extract": ("cmarr.train", "cmarr.predict"),
    "train": ("cmarr.extract", "cmarr.predict"),
    "predict": (),
}
RUN_FILES = re.compile(
    r"^(results?\.(json|csv|md)|system\.json|store\.json|config\.toml|ledger\.jsonl|checkpoint\.pt|state\.pt"
    r"|metrics\.jsonl|predictions\.csv|train\.log|curves\.png)$"
)


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_each_layer_imports_only_what_it_may(package):
    bad = {
        str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.startswith(FORBIDDEN[package]))
        for p in _modules(package)
    }
    assert not {p: n for p, n in bad.items() if n}, f"{package}/ imports across its layer"


def test_the_run_directory_has_one_owner():
    """File names of a run directory are spelled in train/rundir.py only (messages may name them
    inside longer text; a path is never built from a bare name elsewhere)."""
    spelled = {}
    for path in [*_modules("train"), ROOT / "predict" / "predictor.py"]:  # predict/request.py: its own --out
        if path.name != "rundir.py":
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and RUN_FILES.match(node.value):
                    spelled.setdefault(str(path.relative_to(ROOT)), []).append(node.value)
    assert not spelled


def test_the_check_finds_a_spelled_name(tmp_path):
    """The walk above sees a bare run-file name (the test can fail)."""
    tree = ast.parse('path = run_dir / "result.json"')
    assert any(isinstance(n, ast.Constant) and RUN_FILES.match(str(n.value)) for n in ast.walk(tree))


def test_modules_and_functions_stay_small():
    """STYLE.md: modules under about 400 lines; no library function over 60 lines."""
    long_modules, long_functions = [], []
    for package in PACKAGES:
        for path in _modules(package):
            text = path.read_text()
            if len(text.splitlines()) > 400:
                long_modules.append(str(path.relative_to(ROOT)))
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 60:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long_modules and not long_functions, (long_modules, long_functions)
