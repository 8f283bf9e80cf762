"""Build IEMOCAP_full_release skeletons in the real on-disk formats (labels and transcripts only)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest

HEADER_LINE = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def handbook_labels() -> Path:
    """The real header lines of all 10,039 IEMOCAP utterances, from the team handbook folder."""
    root = os.environ.get("CMARR_HANDBOOK_DIR")
    if not root:
        pytest.skip("CMARR_HANDBOOK_DIR is not set (.ci/run sets it to ../shared)")
    path = Path(root) / "corpora" / "iemocap" / "emo_labels.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def write_skeleton(root: Path, header_lines: list[str]) -> None:
    """One EmoEvaluation file per dialog with evaluator lines, per-evaluator Categorical/
    files (a different format the reader must not read), AppleDouble `._` twins, and
    transcripts in their own time format with unlabelled XX ids and `M:` lines."""
    by_dialog: dict[str, list[str]] = defaultdict(list)
    for line in header_lines:
        utt = line.split("\t")[1]
        by_dialog[utt.rsplit("_", 1)[0]].append(line)
    for dialog, lines in by_dialog.items():
        session = root / f"Session{int(dialog[4])}"
        emo = session / "dialog" / "EmoEvaluation"
        (emo / "Categorical").mkdir(parents=True, exist_ok=True)
        (session / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
        blocks = [
            f"{line}\nC-E2:\tNeutral;\t()\nC-E3:\tAnger; Frustration;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n"
            for line in lines
        ]
        (emo / f"{dialog}.txt").write_text(HEADER_LINE + "\n".join(blocks) + "\n")
        (emo / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07Mac OS X        \x00\x02")
        (emo / "Categorical" / f"{dialog}_e2_cat.txt").write_text(
            "".join(f"{ln.split(chr(9))[1]} :Neutral state; ()\n" for ln in lines)
        )
        transcript = []
        for line in lines:
            times, utt = line.split("\t")[:2]
            start, end = (float(x) for x in times.strip("[]").split(" - "))
            transcript.append(f"{utt} [{start:08.4f}-{end:08.4f}]: I am saying {utt[-4:]} out loud.\n")
        transcript.insert(1, f"{dialog}_MXX0 [001.0000-002.0000]: [LAUGHTER]\n")
        transcript.append("M: [BREATHING]\n")
        (session / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("".join(transcript))
