"""cmarr-fer on small files in the exact public formats, with a drawable pattern per class."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cmarr.extract.fer.cli import app
from cmarr.extract.fer.data import CLASSES, load_fer
from cmarr.shared.errors import InputDataError
from typer.testing import CliRunner

runner = CliRunner()
HEADER_PLUS = "Usage,Image name," + ",".join(CLASSES) + ",unknown,NF\n"


def pattern(k: int, rng) -> np.ndarray:
    """A 48x48 image whose class k is visible: stripes of a class-specific period and angle."""
    y, x = np.mgrid[0:48, 0:48]
    angle = np.pi * k / 8
    img = 128 + 100 * np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / (6 + k) + rng.uniform(0, 6.3))
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(int)


def build(tmp_path, per_split=(160, 40, 40), bad=None):
    rng = np.random.default_rng(0)
    rows, plus = ["emotion,pixels,Usage\n"], [HEADER_PLUS]
    n = 0
    for usage, count in zip(("Training", "PublicTest", "PrivateTest"), per_split):
        for _ in range(count):
            k = n % 8
            rows.append(f'{k % 7},"{" ".join(map(str, pattern(k, rng).ravel()))}",{usage}\n')
            votes = [0] * 10
            votes[k] = 8
            votes[(k + 1) % 8] = 2
            if n % 37 == 5:
                votes = [0] * 8 + [6, 4]  # mostly unknown/NF: dropped
            name = "" if n % 53 == 7 else f"fer{n:07d}.png"  # FER+ dropped this image
            plus.append(f"{usage},{name}," + ",".join(map(str, votes)) + "\n")
            n += 1
    if bad:
        bad(rows, plus)
    (tmp_path / "fer2013.csv").write_text("".join(rows))
    (tmp_path / "fer2013new.csv").write_text("".join(plus))
    return tmp_path / "fer2013.csv", tmp_path / "fer2013new.csv"


def test_parser_drops_and_targets(tmp_path):
    data = load_fer(*build(tmp_path))
    n = sum(len(s.images) for s in data.splits.values())
    assert data.skipped["mostly unknown/NF"] == 7 and data.skipped["dropped by FER+"] == 5
    assert n == 240 - 12
    tr = data.splits["Training"]
    dist = tr.targets("distribution")
    assert np.allclose(dist.sum(1), 1) and np.allclose(dist.max(1), 0.8)
    assert (tr.targets("majority").argmax(1) == tr.majority).all()


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda r, p: r.__setitem__(3, r[3].replace(",Training", ",Validation")),
            r"fer2013.csv:4: unknown Usage 'Validation'",
        ),
        (lambda r, p: r.__setitem__(5, '1,"1 2 3",Training\n'), r"fer2013.csv:6: 3 pixel values, expected 2304"),
        (
            lambda r, p: p.append("PrivateTest,fer9999999.png,1,0,0,0,0,0,0,0,0,0\n"),
            r"fer2013new.csv:242: votes row without a matching image",
        ),
    ],
)
def test_malformed_rows_name_the_line_or_are_counted(tmp_path, damage, message):
    files = build(tmp_path, bad=damage)
    with pytest.raises(InputDataError, match=message):
        load_fer(*files)
    data = load_fer(*files, skip_bad_rows=True)
    assert sum(data.skipped.values()) == 12 + 1


def _metrics(stdout: str) -> dict:
    return json.loads(next(line for line in stdout.splitlines() if line.startswith('{"public"')))


@pytest.mark.slow
def test_train_learns_the_patterns_and_extract_uses_the_checkpoint(tmp_path):
    files = build(tmp_path)
    ckpt = tmp_path / "denseface.pt"
    args = [
        "train",
        "--fer2013",
        str(files[0]),
        "--ferplus",
        str(files[1]),
        "--out",
        str(ckpt),
        "--device",
        "cpu",
        "--set",
        "extract.video.depth=16",
        "--set",
        "fer.epochs=12",
        "--set",
        "fer.batch_size=32",
        "--set",
        "fer.lr=0.05",
        "--set",
        "fer.rotation_degrees=5",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    private = _metrics(result.stdout)["private"]
    assert private["accuracy"] > 0.6  # chance is 1/8
    assert ckpt.with_suffix(".confusion.png").is_file()
    again = runner.invoke(
        app, ["evaluate", str(ckpt), "--fer2013", str(files[0]), "--ferplus", str(files[1]), "--device", "cpu"]
    )
    assert again.exit_code == 0 and _metrics(again.stdout)["private"]["accuracy"] == private["accuracy"]
    for output in (result.stdout, again.stdout):  # what a person reads: counts in words, every class's recall
        assert output.startswith("images: Training ") and "left out: " in output and "{'" not in output
        lines = [line for line in output.splitlines() if line.startswith(("public:", "private:"))]
        assert len(lines) == 2 and all(line.count(c + " ") >= 1 for line in lines for c in CLASSES), lines

    import torch

    saved = torch.load(ckpt, weights_only=True)
    assert saved["classes"] == list(CLASSES) and set(saved["data_sha256"]) == {"fer2013", "ferplus"}
    from cmarr.extract.cli import app as extract_app
    from cmarr.extract.corpora.demo import generate_demo_corpus
    from cmarr.shared.store import FeatureStore

    corpus = generate_demo_corpus(tmp_path / "corpus", sessions=1, utterances_per_dialog=4)
    r = CliRunner().invoke(
        extract_app,
        [
            "iemocap",
            "--root",
            str(corpus),
            "--out",
            str(tmp_path / "out"),
            "--modalities",
            "video",
            "--num-workers",
            "0",
            "--set",
            f"extract.video.checkpoint={ckpt}",
            "--set",
            "extract.video.depth=16",
            "--set",
            "extract.video.fps=4",
        ],
    )
    assert r.exit_code == 0, r.output
    video = FeatureStore.open(tmp_path / "out" / "iemocap.zarr").modality("video")
    assert video.present.all() and video.spec.weights_sha256 and video.dim == 48


def _truncated_torch_file(path):
    import torch

    torch.save({"w": torch.zeros(1000)}, path)
    return path.read_bytes()[:700]


@pytest.mark.parametrize("content", [b"", b"\x80\x02garbage" * 50, "truncated"])
def test_evaluate_refuses_a_file_that_is_not_a_checkpoint_in_one_line(tmp_path, content):
    """An input file that is not a checkpoint: a failure (exit 1, as extraction's help says of input
    files that cannot be read), in one line whose quoted cause ends on a whole word."""
    files = build(tmp_path, per_split=(8, 8, 8))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(_truncated_torch_file(bad) if content == "truncated" else content)
    args = ["evaluate", str(bad), "--fer2013", str(files[0]), "--ferplus", str(files[1])]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"error: {bad}: not a Denseface checkpoint")
    assert "Traceback" not in result.output
    cause = " ".join(result.output.split()).rpartition("cmarr-fer: ")[2]
    assert not cause or cause.endswith(" ...)") or len(cause) <= 121, cause
