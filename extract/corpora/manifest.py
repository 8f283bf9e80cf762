"""A manifest (CSV, TSV or JSONL) describing a user's own recordings, one utterance per row.

Columns: id, label, speaker, session (or fold); then any of text (the transcript itself) or
transcript (a path to a text file), audio, video (paths, relative to the manifest's folder),
start, end (seconds, to cut long recordings), half (left or right: the speaker's half of a
split-screen video, as IEMOCAP's), gender, dialog. Rows with an empty label, or a label outside
the label set, are left out and counted; unknown columns are reported and ignored.

Files are read as spreadsheet programs save them: UTF-8 with or without a byte-order mark, or
UTF-16 with its mark (other encodings are refused: see `media/text.py`); LF or CRLF line ends,
blank lines, quoted fields holding the delimiter or line breaks; comma, semicolon (Excel in
European locales) or tab as the delimiter, recognised from the header; decimal commas in times.
Column names are matched without regard to case. A row with more fields than the header (an
unquoted delimiter in a transcript) or fewer is refused rather than shifted. Every refusal names
the file, the line and the column, and says how to fix it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmarr.extract.corpora.record import CorpusScan, MediaSpan, UtteranceRecord
from cmarr.extract.media.span import MediaError
from cmarr.extract.media.text import read_text
from cmarr.shared.errors import InputDataError
from cmarr.shared.labels import LabelSet

COLUMNS = ("id", "label", "speaker", "session", "fold", "text", "transcript", "audio", "video", "start", "end")
COLUMNS += ("gender", "dialog", "half")
NAMES = ("id", "label", "speaker", "session", "fold", "gender", "dialog", "half")  # strings; JSON numbers accepted
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")
CLOCK_TIME = re.compile(r"\d+:\d+(:\d+)?([.,]\d+)?")


@dataclass
class Row:
    """One utterance's fields as read (CSV: strings; JSONL: JSON values), and where it starts."""

    line: int
    values: dict[str, Any]


def read_manifest(path: str | Path, label_set: LabelSet, labelled: bool = True) -> CorpusScan:
    """The manifest's utterances in `label_set`. Raises InputDataError naming file, line and column.
    `labelled=False` (recordings to predict): label, speaker and session may be absent or empty; a
    label outside the set is then kept as unlabelled instead of left out."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: manifest not found")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl", ".ndjson"):
        raise InputDataError(f"{path}: manifest must be .csv, .tsv or .jsonl")
    try:
        text = read_text(path, hint='save it as "CSV UTF-8" (Excel) or UTF-8 (any editor)')
    except MediaError as err:
        raise InputDataError(str(err)) from None
    scan = CorpusScan(records=[], excluded=Counter())
    rows = _json_rows(path, text, scan) if suffix in (".jsonl", ".ndjson") else _csv_rows(path, text, suffix, scan)
    seen: dict[str, int] = {}
    for row in rows:
        record = _record(path, row, label_set, scan, labelled)
        if record is None:
            continue
        if record.id in seen:
            raise InputDataError(f"{path}:{row.line}: duplicate id {record.id!r} (first on line {seen[record.id]})")
        seen[record.id] = row.line
        scan.records.append(record)
    return scan


# ----------------------------------------------------------------------------- CSV and JSONL rows


def _csv_rows(path: Path, text: str, suffix: str, scan: CorpusScan) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(path, text, suffix))
    header = None
    rows = []
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise InputDataError(f"{path}:{line}: not valid CSV ({err}); check the quotes on this line") from None
        if not any(f.strip() for f in fields):
            continue  # blank lines, and rows of empty cells as spreadsheets write them
        if header is None:
            header = _header(path, line, fields)
            continue
        rows.append(Row(line, _fields(path, line, header, fields)))
    if header is None:
        raise InputDataError(f"{path}: empty manifest (no header line)")
    if unknown := [h for h in header if h not in COLUMNS and any(r.values.get(h) for r in rows)]:
        scan.problems.append(_ignored(path, "column", unknown))
    return rows


def _delimiter(path: Path, text: str, suffix: str) -> str:
    """Tab for .tsv; for .csv the delimiter under which the header names id and another known column."""
    if suffix == ".tsv":
        return "\t"
    first = next((line for line in text.splitlines() if line.strip()), "")
    for delimiter in DELIMITERS:  # the one under which the header names id and another known column
        names = [c.strip().lower() for c in next(csv.reader([first], delimiter=delimiter), [])]
        if "id" in names and len(set(names) & set(COLUMNS)) >= 2:
            return delimiter
    raise InputDataError(
        f"{path}:1: no header naming the columns id and label (separated by commas, semicolons or tabs); "
        f"the first line is {first[:80]!r}"
    )


def _header(path: Path, line: int, fields: list[str]) -> list[str]:
    names = [f.strip().lower() or f"(column {k} has no name)" for k, f in enumerate(fields, 1)]
    if repeated := sorted({n for n in names if n and names.count(n) > 1}):
        raise InputDataError(f"{path}:{line}: column {', '.join(map(repr, repeated))} appears more than once")
    return names


def _fields(path: Path, line: int, header: list[str], fields: list[str]) -> dict[str, str]:
    """A data row as {column: text}; its length must be the header's (trailing empty cells aside)."""
    while len(fields) > len(header) and not fields[-1].strip():
        fields = fields[:-1]
    if len(fields) != len(header):
        more = "more" if len(fields) > len(header) else "fewer"
        raise InputDataError(
            f"{path}:{line}: {len(fields)} fields, {more} than the header's {len(header)}; put values that "
            'contain the delimiter or a line break in double quotes ("I think, this is fine")'
        )
    return dict(zip(header, fields))


def _json_rows(path: Path, text: str, scan: CorpusScan) -> list[Row]:
    rows, unknown = [], set()
    for line, content in enumerate(text.splitlines(), 1):
        if not content.strip():
            continue
        try:
            value = json.loads(content, object_pairs_hook=lambda pairs, line=line: _object(path, line, pairs))
        except json.JSONDecodeError as err:
            raise InputDataError(f"{path}:{line}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(value, dict):
            raise InputDataError(
                f'{path}:{line}: each line must be one JSON object such as {{"id": "u1", "label": ...}}, '
                f"not {_json_kind(value)}"
            )
        unknown.update(k for k in value if k not in COLUMNS)
        rows.append(Row(line, value))
    if unknown:
        scan.problems.append(_ignored(path, "key", sorted(unknown)))
    return rows


def _ignored(path: Path, what: str, names: list[str]) -> str:
    return f"{path}: {what} {', '.join(map(repr, names))} ignored (cmarr reads {', '.join(COLUMNS)})"


def _object(path: Path, line: int, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k.strip().lower() for k, _ in pairs]
    if repeated := sorted({k for k in keys if keys.count(k) > 1}):
        raise InputDataError(f"{path}:{line}: key {', '.join(map(repr, repeated))} appears more than once")
    return dict(zip(keys, (v for _, v in pairs)))


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number" if isinstance(value, int | float) else "a string"


# ----------------------------------------------------------------------------- values


def _record(path: Path, row: Row, label_set: LabelSet, scan: CorpusScan, labelled: bool) -> UtteranceRecord | None:
    """The row's record, or None when its label is outside the label set (counted)."""
    get = _Getter(path, row)
    missing = [c for c in ("id", "label", "speaker") if not get.name(c) and (labelled or c == "id")]
    if labelled and not get.name("session") and not get.name("fold"):
        missing.append("session (or fold)")
    if missing:
        raise InputDataError(f"{path}:{row.line}: missing {', '.join(missing)}")
    label = label_set.mapping.get(get.name("label"), get.name("label"))
    if label not in label_set.classes:
        if labelled:
            scan.excluded[label] += 1
            return None
        label = ""
    start, end = get.seconds("start"), get.seconds("end")
    if (start is None) != (end is None):
        raise InputDataError(f"{path}:{row.line}: give both start and end (seconds), or neither")
    if start is not None and end <= start:
        raise InputDataError(f"{path}:{row.line}: end {end:g} s is not after start {start:g} s")
    text, text_error = get.text("text"), ""
    if text is None and (transcript := get.text("transcript")):
        text, text_error = _transcript(path.parent / transcript, row, scan)
    session = get.name("session") or get.name("fold") or ("" if labelled else "new")
    half = get.name("half") or None
    if half not in (None, "left", "right"):
        raise InputDataError(
            f"{path}:{row.line}: column half: {half!r}; use left or right (split-screen video), or leave it empty"
        )

    def media(column: str) -> MediaSpan | None:
        value = get.text(column)
        return MediaSpan(path.parent / value, start, end, half if column == "video" else None) if value else None

    return UtteranceRecord(
        id=get.name("id"),
        label=label,
        session=session,
        speaker=get.name("speaker"),
        gender=get.name("gender"),
        dialog=get.name("dialog"),
        start=start if start is not None else float("nan"),
        end=end if end is not None else float("nan"),
        text=text,
        text_error=text_error,
        audio=media("audio"),
        video=media("video"),
        split_group=session,
    )


def _transcript(tpath: Path, row: Row, scan: CorpusScan) -> tuple[str | None, str]:
    """(text, error) of a transcript file; an unreadable one fails the item's text with the error."""
    if not tpath.is_file():
        error = f"missing input file: {tpath}"
    else:
        try:
            return read_text(tpath).strip(), ""
        except MediaError as err:
            error = str(err)
    scan.problems.append(f"line {row.line}: {error}")
    return None, error


class _Getter:
    """Typed access to a row's values, each refusal naming the file, the line and the column."""

    def __init__(self, path: Path, row: Row):
        self.path, self.row = path, row

    def fail(self, column: str, problem: str) -> InputDataError:
        return InputDataError(f"{self.path}:{self.row.line}: column {column!r}: {problem}")

    def text(self, column: str) -> str | None:
        """A text value (transcript, path); None when absent or empty."""
        value = self.row.values.get(column)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.fail(column, f"expected text, got {_json_kind(value)}; write it as a JSON string")
        return value if value.strip() else None

    def name(self, column: str) -> str:
        """An identifier (id, label, speaker, ...): text, or a whole number in JSON; '' when absent."""
        value = self.row.values.get(column)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return (self.text(column) or "").strip()

    def seconds(self, column: str) -> float | None:
        """A time in seconds (a number; `12,5` is 12.5); None when absent."""
        value = self.row.values.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.fail(column, f"expected seconds, got {_json_kind(value)}")
        if isinstance(value, str):
            text = value.strip()
            text = text.replace(",", ".") if DECIMAL_COMMA.fullmatch(text) else text
            if CLOCK_TIME.fullmatch(text):
                raise self.fail(column, f"{value!r} is a clock time; write seconds (1:02.5 is 62.5)")
            try:
                value = float(text)
            except ValueError:
                raise self.fail(column, f"{value!r} is not a number of seconds (write e.g. 12.5)") from None
        if not math.isfinite(value):
            raise self.fail(column, f"{value!r} is not a finite number of seconds")
        if value < 0:
            raise self.fail(column, f"{value:g} is negative; times are seconds from the start of the file")
        return float(value)
