"""The import name: extract/, train/, shared/ and predict/ are linked into cmarr/ (cmarr/train ->
../train, ...), so `cmarr.*` is the one name that Python, the wheel and static tools all see, and
each folder refuses its bare name."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("extract", "train", "shared", "predict")
SCANNED = ("cmarr", *PACKAGES, "bench", "tests")
# Imports that do not resolve: the static check must report each of them, or it proves nothing.
CANARIES = (
    "import cmarr.nope",
    "from cmarr.train.nope import x",
    "from cmarr.train.run import no_such_name",
)


def _walk(folder: Path):
    """Every file under folder, its links to folders not followed (cmarr/train is train/ again)."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            yield Path(root, name)


def _cmarr_imports(path: Path) -> list[tuple[int, str]]:
    """(line, statement) for each cmarr module and each name from one that the file imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] == "cmarr"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "cmarr":
            found += [(node.lineno, f"from {node.module} import {a.name}") for a in node.names]
    return found


def test_folders_are_linked_into_cmarr():
    for name in PACKAGES:
        link = ROOT / "cmarr" / name
        assert link.is_symlink() and os.readlink(link) == f"../{name}", (
            f"cmarr/{name} must be a link to ../{name} (a Windows checkout needs git's core.symlinks)"
        )


@pytest.mark.parametrize("name", PACKAGES)
def test_bare_name_is_refused(name):
    done = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0
    assert f"ImportError: import cmarr.{name}, not {name}:" in done.stderr


def test_every_cmarr_import_resolves_statically(tmp_path):
    """basedpyright (the pyright that editors run, node bundled) resolves every cmarr import of the
    tree: the modules and each name imported from them. One probe file holds the imports of every
    file, so only the probe is type-checked (the whole tree would take a minute)."""
    pytest.importorskip("basedpyright", reason="basedpyright is in the dev extra: pip install -e '.[dev]'")
    origins: dict[str, list[str]] = {}
    for folder in SCANNED:
        for path in _walk(ROOT / folder):
            if path.suffix == ".py":
                for line, statement in _cmarr_imports(path):
                    origins.setdefault(statement, []).append(f"{path.relative_to(ROOT)}:{line}")
    n_imports = sum(len(where) for where in origins.values())
    assert n_imports > 500, f"only {n_imports} cmarr imports found: is the scan walking the tree?"
    lines = [*origins, *CANARIES]
    probe = tmp_path / "probe.py"
    probe.write_text("\n".join(lines) + "\n")
    config = {
        "typeCheckingMode": "off",
        "useLibraryCodeForTypes": False,  # torch & co. unread: only cmarr's own files matter here
        "reportMissingImports": "error",
        "reportAttributeAccessIssue": "error",
        "reportMissingModuleSource": "none",
        "extraPaths": [str(ROOT)],  # the tree, as an editor opened at the repository root sees it
    }
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "basedpyright", "--outputjson", "--pythonpath", sys.executable, str(probe)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.perf_counter() - start
    assert done.stdout.strip(), done.stderr
    report = json.loads(done.stdout)
    flagged: dict[str, list[str]] = {}
    for diag in report["generalDiagnostics"]:
        if Path(diag["file"]) == probe and diag["severity"] == "error":
            flagged.setdefault(lines[diag["range"]["start"]["line"]], []).append(diag["message"])
    missed = [c for c in CANARIES if c not in flagged]
    assert not missed, f"the check does not see these unresolved imports: {missed}"
    unresolved = {s: (flagged[s], origins[s]) for s in origins if s in flagged}
    assert not unresolved, "\n".join(f"{s}  ({', '.join(w)}): {m[0]}" for s, (m, w) in unresolved.items())
    print(f"{n_imports} cmarr imports ({len(origins)} distinct) resolved in {seconds:.1f} s")


def _copy_sources(dest: Path) -> None:
    """What the wheel is built from, away from the tree (a stale build/ there would leak old files)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("cmarr", *PACKAGES):
        shutil.copytree(ROOT / name, dest / name, symlinks=True, ignore=ignore)


def test_wheel_holds_every_package_file(tmp_path):
    """Every file of the packages (modules and any data they load) ships, each once, under cmarr/:
    a new subpackage or data file is found by [tool.setuptools.packages.find] through the links."""
    src, out = tmp_path / "src", tmp_path / "wheel"
    _copy_sources(src)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("cmarr-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = {n for n in z.namelist() if n.startswith("cmarr/")}
        top_level = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/top_level.txt"))).decode()
    expected = {"cmarr/__init__.py"}
    for name in PACKAGES:
        expected |= {f"cmarr/{p.relative_to(ROOT).as_posix()}" for p in _walk(ROOT / name)}
    assert shipped == expected, (
        f"missing from the wheel: {sorted(expected - shipped)}; only in the wheel: {sorted(shipped - expected)}"
    )
    assert top_level.split() == ["cmarr"]
