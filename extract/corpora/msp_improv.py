"""MSP-IMPROV as released (see the handbook's CORPORA.md, section 2).

The label file is `Evaluation.txt` (several local copies call it `Evalution.txt`); it names the
*video* as `UTD-IMPROV-<stem>.avi`, while media files are `MSP-IMPROV-<stem>.{wav,avi}`. Media are
found by stem wherever they lie (nested `Audio/sessionN/...` or flat `sessionN/...` layouts).
The paper keeps recording type `S` (other improvised turns) and the four labels A, H, N, S; its
3,819 subset further drops clips without a detected face, which `cmarr-train --require video`
reproduces from the store's video status (or pass the original list as an exclusion file).
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
    r"^UTD-IMPROV-([A-Z0-9-]+)\.avi; ([A-Z]); A:(\d+\.\d+|NaN); V:(\d+\.\d+|NaN); "
    r"D:(\d+\.\d+|NaN) ; N:(\d+\.\d+|NaN);$"
)
LETTERS = {"A": "ang", "H": "hap", "S": "sad", "N": "neu", "O": "oth", "X": "xxx"}
STEM = re.compile(r"^MSP-IMPROV-(S\d\d)([A-Z])-([FM])(\d\d)-([PRST])-([A-Z]{1,2}\d{2,3}.*)$")


def label_file(root: Path) -> Path:
    for name in ("Evaluation.txt", "Evalution.txt"):
        if (root / name).is_file():
            return root / name
    raise InputDataError(f"{root}: no Evaluation.txt (or Evalution.txt) label file")


def read_msp_improv(
    root: str | Path, label_set: LabelSet, types: str = "S", exclude_file: str | Path | None = None
) -> CorpusScan:
    root = Path(root)
    labels_path = label_file(root)
    excluded_ids = _read_exclusions(exclude_file) if exclude_file else set()
    media = _index_media(root)
    transcripts = _index_transcripts(root)
    scan = CorpusScan(records=[], excluded=Counter())
    with open(labels_path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.startswith("UTD-IMPROV-"):
                continue  # rater lines and blank separators
            m = HEADER.match(line.strip())
            if m is None:
                scan.problems.append(f"{labels_path}:{lineno}: unreadable header: {line.strip()[:80]!r}")
                continue
            stem = f"MSP-IMPROV-{m[1]}"
            parts = STEM.match(stem)
            if parts is None:
                scan.problems.append(f"{labels_path}:{lineno}: unexpected clip name {stem}")
                continue
            if parts[5] not in types:
                continue
            code = LETTERS.get(m[2], m[2].lower())
            if stem in excluded_ids:
                scan.excluded["(exclusion list)"] += 1
                continue
            if label_set.index(code) is None:
                scan.excluded[code] += 1
                continue
            scan.records.append(_record(stem, parts, label_set.mapping.get(code, code), media, transcripts))
    return scan


def _record(stem, parts, label, media, transcripts) -> UtteranceRecord:
    speaker = f"{parts[3]}{parts[4]}"
    session = f"session{int(parts[4])}"
    transcript = transcripts.get(stem)
    unreadable = isinstance(transcript, MediaError)
    return UtteranceRecord(
        id=stem,
        label=label,
        session=session,
        speaker=speaker,
        gender=parts[3],
        dialog=f"{parts[1]}{parts[2]}",
        text=None if unreadable else transcript,
        text_error=str(transcript) if unreadable else "",
        audio=MediaSpan(media[(stem, ".wav")]) if (stem, ".wav") in media else None,
        video=MediaSpan(media[(stem, ".avi")]) if (stem, ".avi") in media else None,
        split_group=session,
    )


def _index_media(root: Path) -> dict[tuple[str, str], Path]:
    found = {}
    for suffix in (".wav", ".avi"):
        for path in root.rglob(f"MSP-IMPROV-*{suffix}"):
            if not path.name.startswith("._"):
                found[(path.stem, suffix)] = path
    return found


def _index_transcripts(root: Path) -> dict[str, str | MediaError]:
    """`All_human_transcriptions/<id>.txt` (unpacked Human_Transcriptions.zip): text on the first
    line; a file that is not text maps to its error (the utterance's text fails with it)."""
    out: dict[str, str | MediaError] = {}
    for path in root.rglob("MSP-IMPROV-*.txt"):
        if not path.name.startswith("._"):
            try:
                lines = read_text(path).splitlines()
                out[path.stem] = lines[0].strip() if lines else ""
            except MediaError as err:
                out[path.stem] = err
    return out


def _read_exclusions(path: str | Path) -> set[str]:
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: exclusion list not found")
    ids = set()
    for line in path.read_text().splitlines():
        name = line.strip().split()[0] if line.strip() else ""
        if name:
            ids.add(Path(name).stem.replace("UTD-IMPROV", "MSP-IMPROV"))
    return ids
