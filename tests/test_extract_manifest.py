"""Manifests and transcripts as people write them: read correctly, or refused naming the file, the
line, the column and a fix; never a traceback, never characters other than the author's."""

from __future__ import annotations

import codecs
import json
import os
import re
from pathlib import Path

import pytest
from cmarr.extract.corpora.iemocap import read_iemocap
from cmarr.extract.corpora.manifest import read_manifest
from cmarr.extract.corpora.msp_improv import read_msp_improv
from cmarr.shared.errors import InputDataError
from cmarr.shared.labels import FOUR_CLASS, get_label_set

from tests.iemocap_skeleton import write_skeleton
from tests.test_msp_manifest import build_msp

LABELS = get_label_set("calm,tense")


def read(folder: Path, content: str | bytes, name: str = "m.csv"):
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return read_manifest(path, LABELS)


@pytest.mark.parametrize(
    "content",
    [
        codecs.BOM_UTF8 + b"id,label,speaker,session,text\r\nu1,calm,p1,A,It\xe2\x80\x99s caf\xc3\xa9.\r\n",  # Excel
        codecs.BOM_UTF16_LE + "id\tlabel\tspeaker\tsession\ttext\r\nu1\tcalm\tp1\tA\tIt’s café.\r\n".encode("utf-16le"),
        "ID;Label;Speaker;Session;Text\nu1;calm;p1;A;It’s café.\n",  # European Excel, capitalised names
        "\nid,label,speaker,session,text\n\n,,,,\nu1,calm,p1,A,It’s café.\n\n",  # blank lines, a row of empty cells
        "id,label,speaker,session,text\nu1,calm,p1,A,It’s café.,\n",  # a trailing delimiter: no value lost
    ],
    ids=["utf8-bom-crlf", "utf16-tab", "semicolon", "blank-lines", "trailing-delimiter"],
)
def test_spreadsheet_files_are_read(tmp_path, content):
    scan = read(tmp_path, content)
    [record] = scan.records
    assert (record.id, record.label, record.speaker, record.session, record.text) == (
        "u1",
        "calm",
        "p1",
        "A",
        "It’s café.",
    )
    assert scan.problems == []


def test_decimal_commas_quoted_newlines_and_their_line_numbers(tmp_path):
    content = (
        "id;label;speaker;session;text;audio;start;end\r\n"
        'u1;calm;p1;A;"first line\r\nsecond; line";a.wav;12,5;14\r\n'
        "u2;tense;p1;A;ok;a.wav;3;x\r\n"
    )
    with pytest.raises(InputDataError, match=r"m\.csv:4: column 'end': 'x' is not a number of seconds"):
        read(tmp_path, content)  # u2 starts on line 4: the quoted line break is counted
    scan = read(tmp_path, content.replace(";x", ";4"))
    assert scan.records[0].text == "first line\r\nsecond; line"
    assert (scan.records[0].start, scan.records[0].audio.start, scan.records[0].audio.end) == (12.5, 12.5, 14.0)


def test_unknown_columns_and_keys_are_reported(tmp_path):
    scan = read(tmp_path, "id,label,speaker,session,emotion,,notes\nu1,calm,p1,A,happy,x,\n")
    assert len(scan.problems) == 1 and "'emotion', '(column 6 has no name)' ignored" in scan.problems[0]
    scan = read(tmp_path, json.dumps({"id": "u1", "label": "calm", "speaker": "p", "fold": 1, "mood": 2}), "m.jsonl")
    assert scan.records[0].session == "1" and "key 'mood' ignored" in scan.problems[0]


TIMES = "id,label,speaker,session,start,end\nu1,calm,p,A,"
TEXT = "id,label,speaker,session,text\n"


@pytest.mark.parametrize(
    "content, message",
    [
        (
            TEXT.encode() + b"u1,calm,p01,A,It\x92s caf\xe9\r\n",
            r'm\.csv: not UTF-8 \(byte 0x92 at line 2, column 17\); save it as "CSV UTF-8"',
        ),
        (TIMES + "abc,2\n", r"m\.csv:2: column 'start': 'abc' is not a number of seconds"),
        (TIMES + "0,inf\n", r"m\.csv:2: column 'end': inf is not a finite"),
        (TIMES + "nan,2\n", r"column 'start': nan is not a finite"),
        (TIMES + "-1,2\n", r"column 'start': -1 is negative"),
        (TIMES + "1:02,1:05\n", r"column 'start': '1:02' is a clock time; write seconds"),
        (TIMES + "2.0,1.0\n", r"m\.csv:2: end 1 s is not after start 2 s"),
        ("id,label,speaker,session,start\nu1,calm,p,A,2.0\n", r"m\.csv:2: give both start and end"),
        ("id,label,speaker,session,id\nu1,calm,p,A,u2\n", r"m\.csv:1: column 'id' appears more than once"),
        (TEXT + "u1,calm,p,A,I think, this is fine\n", r"m\.csv:2: 6 fields, more than the header's 5; put values"),
        (TEXT + "u1,calm,p\n", r"m\.csv:2: 3 fields, fewer than the header's 5"),
        ("name,emotion\nu1,calm\n", r"m\.csv:1: no header naming the columns id and label"),
        (TEXT + "u1,calm,p,A,\nu1,tense,p,A,\n", r"m\.csv:3: duplicate id 'u1' \(first on line 2\)"),
        (b"id,label\x00,speaker\n", r"a binary file"),
    ],
)  # fmt: skip
def test_bad_csv_is_refused_naming_file_line_column(tmp_path, content, message):
    with pytest.raises(InputDataError, match=message):
        read(tmp_path, content)


def utterance(**values) -> str:
    return json.dumps({"id": "u2", "label": "calm", "speaker": "p", "session": "A", **values})


@pytest.mark.parametrize(
    "line, message",
    [
        ("[1, 2, 3]", r"m\.jsonl:2: each line must be one JSON object .*not an array"),
        ("42", r"not a number"),
        ('"u2,calm"', r"not a string"),
        ("null", r"not null"),
        (utterance(text=["a", "b"]), r"m\.jsonl:2: column 'text': expected text, got an array"),
        (utterance(text=7), r"column 'text': expected text, got a number"),
        (utterance(start=True, end=2), r"column 'start': expected seconds, got true"),
        (utterance(start="x", end=2), r"column 'start': 'x' is not a number"),
        ('{"id": "u2", "id": "u3", "label": "calm"}', r"m\.jsonl:2: key 'id' appears more than once"),
        ('{"id": "u2", "label": "calm"', r"m\.jsonl:2: not valid JSON"),
    ],
)
def test_bad_jsonl_is_refused_naming_file_line_column(tmp_path, line, message):
    first = json.dumps({"id": 1, "label": "calm", "speaker": 2, "session": 3, "text": "hi"})
    with pytest.raises(InputDataError, match=message):
        read(tmp_path, first + "\n" + line + "\n", "m.jsonl")
    assert read(tmp_path, first + "\n", "m.jsonl").records[0].id == "1"  # whole numbers are names


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"Caf\xe9 au lait.\n", r"t\.txt: not UTF-8 \(byte 0xe9 at line 1, column 4\)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"t\.txt: a binary file"),
        (None, r"missing input file: .*t\.txt"),
    ],
)
def test_unreadable_transcript_files_fail_their_item(tmp_path, content, reason):
    if content is not None:
        (tmp_path / "t.txt").write_bytes(content)
    scan = read(tmp_path, "id,label,speaker,session,transcript\nu1,calm,p,A,t.txt\n")
    [record] = scan.records
    assert record.text is None and re.search(reason, record.text_error)
    assert scan.problems and re.search(reason, scan.problems[0])
    from cmarr.extract.encoders.text import load_text
    from cmarr.extract.media.span import MediaError

    with pytest.raises(MediaError, match=reason):
        load_text(record)  # the item fails with the reason instead of storing U+FFFD as ok


def test_corpus_transcripts_that_are_not_utf8_fail_their_items(tmp_path):
    headers = [
        "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]",
        "[9.0000 - 10.0000]\tSes01F_impro01_M000\tang\t[2.5000, 2.5000, 2.5000]",
    ]
    root = tmp_path / "iemocap"
    write_skeleton(root, headers)
    path = root / "Session1/dialog/transcriptions/Ses01F_impro01.txt"
    path.write_bytes(path.read_bytes().replace(b"saying", b"s\x92aying"))
    scan = read_iemocap(root, FOUR_CLASS)
    assert [r.text for r in scan.records] == [None, None]
    assert all("Ses01F_impro01.txt: not UTF-8 (byte 0x92" in r.text_error for r in scan.records)

    build_msp(tmp_path / "msp")
    bad = next((tmp_path / "msp" / "All_human_transcriptions").glob("*S01A-F01-S-FM01.txt"))
    bad.write_bytes(b"words \xff\xfe of it\n")
    records = {r.id: r for r in read_msp_improv(tmp_path / "msp", FOUR_CLASS).records}
    assert "not UTF-8 (byte 0xff at line 1, column 7)" in records["MSP-IMPROV-S01A-F01-S-FM01"].text_error
    assert records["MSP-IMPROV-S01A-F01-S-FM02"].text == "words of S01A-F01-S-FM02"


def handbook_case(name: str) -> Path:
    root = os.environ.get("CMARR_HANDBOOK_DIR")
    if not root:
        pytest.skip("CMARR_HANDBOOK_DIR is not set (.ci/run sets it to ../shared)")
    path = Path(root) / "field-cases" / name
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path


@pytest.mark.parametrize(
    "name, message",
    [
        ("start_abc.csv", r"start_abc\.csv:2: column 'start': 'abc' is not a number"),
        ("jstart.jsonl", r"jstart\.jsonl:1: column 'start': 'x' is not a number"),
        ("latin1.csv", r"latin1\.csv: not UTF-8 \(byte 0xe9 at line 2"),
        ("array.jsonl", r"array\.jsonl:2: .*not an array"),
        ("number.jsonl", r"number\.jsonl:2: .*not a number"),
        ("types.jsonl", r"types\.jsonl:1: column 'text': expected text, got an array"),
        ("end_inf.csv", r"end_inf\.csv:2: column 'end': inf is not a finite"),
        ("start_gt_end.csv", r"start_gt_end\.csv:2: end 1 s is not after start 2 s"),
        ("extra_comma.csv", r"extra_comma\.csv:2: 7 fields, more than the header's 6"),
        ("bom.csv", None),
    ],
)
def test_handbook_manifest_errors(name, message):
    path = handbook_case("manifest-errors") / name
    if message is None:
        assert [r.id for r in read_manifest(path, get_label_set("ang,sad")).records] == ["u1"]
    else:
        with pytest.raises(InputDataError, match=message):
            read_manifest(path, get_label_set("ang,sad"))


def test_handbook_excel_manifests():
    folder = handbook_case("manifest-excel")
    assert [r.id for r in read_manifest(folder / "bom.csv", LABELS).records] == ["u1", "u2"]
    with pytest.raises(InputDataError, match=r"cp1252\.csv: not UTF-8 \(byte 0x92 at line 2, column 17\)"):
        read_manifest(folder / "cp1252.csv", LABELS)
