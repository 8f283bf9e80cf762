"""A manifest (CSV or JSONL) describing a user's own recordings, one utterance per row.

Columns: id, label, speaker, session (or fold); then any of text (the transcript itself) or
transcript (a path to a text file), audio, video (paths, relative to the manifest's folder),
start, end (seconds, to cut long recordings), gender, dialog. Rows with an empty label, or a
label outside the label set, are left out and counted.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from cmarr.extract.corpora.record import CorpusScan, MediaSpan, UtteranceRecord
from cmarr.shared.errors import InputDataError
from cmarr.shared.labels import LabelSet

REQUIRED = ("id", "label", "speaker")


def read_manifest(path: str | Path, label_set: LabelSet) -> CorpusScan:
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: manifest not found")
    rows = list(_rows(path))
    scan = CorpusScan(records=[], excluded=Counter())
    seen: set[str] = set()
    for lineno, row in rows:
        missing = [c for c in REQUIRED if not str(row.get(c) or "").strip()]
        if not (row.get("session") or row.get("fold")):
            missing.append("session (or fold)")
        if missing:
            raise InputDataError(f"{path}:{lineno}: missing {', '.join(missing)}")
        uid = str(row["id"]).strip()
        if uid in seen:
            raise InputDataError(f"{path}:{lineno}: duplicate id {uid!r}")
        seen.add(uid)
        label = label_set.mapping.get(str(row["label"]).strip(), str(row["label"]).strip())
        if label not in label_set.classes:
            scan.excluded[label or "(empty)"] += 1
            continue
        scan.records.append(_record(path.parent, lineno, row, uid, label, scan))
    return scan


def _rows(path: Path):
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield lineno, json.loads(line)
                    except json.JSONDecodeError as err:
                        raise InputDataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    elif path.suffix.lower() in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            for row in reader:
                yield reader.line_num, row
    else:
        raise InputDataError(f"{path}: manifest must be .csv, .tsv or .jsonl")


def _record(base: Path, lineno: int, row: dict, uid: str, label: str, scan: CorpusScan) -> UtteranceRecord:
    start, end = _time(row.get("start")), _time(row.get("end"))
    if (start is None) != (end is None) or (start is not None and end <= start):
        raise InputDataError(f"{base}:{lineno}: start and end must both be given, with end > start")
    text = row.get("text")
    if not text and row.get("transcript"):
        tpath = base / str(row["transcript"])
        if tpath.is_file():
            text = tpath.read_text(encoding="utf-8", errors="replace").strip()
        else:
            scan.problems.append(f"line {lineno}: transcript {tpath} not found")
    session = str(row.get("session") or row.get("fold")).strip()

    def media(key):
        return MediaSpan(base / str(row[key]), start, end) if row.get(key) else None

    return UtteranceRecord(
        id=uid,
        label=label,
        session=session,
        speaker=str(row["speaker"]).strip(),
        gender=str(row.get("gender") or ""),
        dialog=str(row.get("dialog") or ""),
        start=start if start is not None else float("nan"),
        end=end if end is not None else float("nan"),
        text=text,
        audio=media("audio"),
        video=media("video"),
        split_group=session,
    )


def _time(value) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    return float(value)
