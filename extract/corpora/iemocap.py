"""IEMOCAP in its original `IEMOCAP_full_release` layout (see the handbook's CORPORA.md).

Traps handled: labels come only from `SessionN/dialog/EmoEvaluation/*.txt` (not the per-evaluator
subfolders), AppleDouble `._*` files are skipped, dialog names are irregular (derived from the
utterance id, never enumerated), transcripts use a different time format and contain ids that
never get a label, the speaker is the utterance's suffix letter (the dialog letter is the
marker-wearing lead, who sits in the left half of the split-screen video).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from cmarr.extract.corpora.record import CorpusScan, MediaSpan, UtteranceRecord
from cmarr.extract.media.span import MediaError
from cmarr.extract.media.text import read_text
from cmarr.shared.errors import InputDataError
from cmarr.shared.labels import LabelSet

HEADER = re.compile(
    r"^\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(Ses0[1-5][FM]_\w+_[FM]\d{3})\t([a-z]{3})\t"
    r"\[(\d\.\d{4}), (\d\.\d{4}), (\d\.\d{4})\]$"
)
TRANSCRIPT = re.compile(r"^(\S+)\s+\[(\d+\.\d+)-(\d+\.\d+)\]:\s*(.*)$")


def dialog_of(utt_id: str) -> str:
    """`Ses03M_impro05a_F001` -> `Ses03M_impro05a`: the id minus its last `_` field."""
    return utt_id.rsplit("_", 1)[0]


def video_half(utt_id: str) -> str:
    """The lead (dialog letter) sits in the left pane; the other actor in the right one."""
    return "left" if utt_id[-4] == utt_id[5] else "right"


def read_iemocap(root: str | Path, label_set: LabelSet) -> CorpusScan:
    root = Path(root)
    sessions = sorted(p for p in root.glob("Session[1-5]") if p.is_dir())
    if not sessions:
        raise InputDataError(f"{root}: no Session1..Session5 folders (is this IEMOCAP_full_release?)")
    scan = CorpusScan(records=[], excluded=Counter())
    for session_dir in sessions:
        for label_file in sorted((session_dir / "dialog" / "EmoEvaluation").glob("*.txt")):
            if label_file.name.startswith("._"):
                continue  # AppleDouble metadata from macOS copies, not a label file
            dialog = label_file.stem
            transcripts, error = _read_transcripts(session_dir / "dialog" / "transcriptions" / f"{dialog}.txt", scan)
            for utt, start, end, code in _read_headers(label_file, scan):
                label = label_set.mapping.get(code, code)
                if label not in label_set.classes:
                    scan.excluded[code] += 1
                    continue
                scan.records.append(_record(session_dir, utt, start, end, label, transcripts.get(utt), error))
    return scan


def _read_headers(path: Path, scan: CorpusScan):
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.startswith("["):
                continue  # evaluator lines, comments, blank lines
            m = HEADER.match(line.rstrip("\r\n"))
            if m is None:
                scan.problems.append(f"{path}:{lineno}: unreadable label header: {line.strip()[:80]!r}")
                continue
            yield m[3], float(m[1]), float(m[2]), m[4]


def _read_transcripts(path: Path, scan: CorpusScan) -> tuple[dict[str, str], str]:
    """(utterance id -> transcript, error): a file that is not text fails the dialog's texts."""
    if not path.is_file():
        scan.problems.append(f"{path}: transcription file missing")
        return {}, ""
    try:
        text = read_text(path)
    except MediaError as err:
        scan.problems.append(str(err))
        return {}, str(err)
    out = {}
    for line in text.splitlines():
        m = TRANSCRIPT.match(line.strip())
        if m:  # `M:`/`F:` lines and blank lines do not match; XX ids never get a label
            out[m[1]] = m[4].strip()
    return out, ""


def _record(
    session_dir: Path, utt: str, start: float, end: float, label: str, text: str | None, text_error: str = ""
) -> UtteranceRecord:
    dialog = dialog_of(utt)
    session = f"Ses0{session_dir.name[-1]}"
    return UtteranceRecord(
        id=utt,
        label=label,
        session=session,
        speaker=session + utt[-4],
        gender=utt[-4],
        dialog=dialog,
        start=start,
        end=end,
        text=text,
        text_error=text_error,
        audio=MediaSpan(session_dir / "sentences" / "wav" / dialog / f"{utt}.wav"),
        video=MediaSpan(session_dir / "dialog" / "avi" / "DivX" / f"{dialog}.avi", start, end, video_half(utt)),
        split_group=session,
    )
