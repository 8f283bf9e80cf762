"""MSP-IMPROV and manifest readers on small trees built in the real formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from cmarr.extract.cli import app
from cmarr.extract.corpora.manifest import read_manifest
from cmarr.extract.corpora.msp_improv import read_msp_improv
from cmarr.extract.media.audio import load_audio
from cmarr.shared.errors import InputDataError
from cmarr.shared.labels import FOUR_CLASS, get_label_set
from typer.testing import CliRunner

CLIPS = [  # (stem, consensus letter)
    ("S01A-F01-S-FM01", "A"),
    ("S01A-F01-S-FM02", "H"),
    ("S02H-M01-S-MF01", "N"),
    ("S02H-M01-S-MF02", "S"),
    ("S03S-F02-S-FM01", "O"),
    ("S03S-F02-S-FM02", "X"),
    ("S04N-M02-R-MF01", "N"),
    ("S05A-F03-T-FM01", "A"),
    ("S06H-M03-P-MF07", "H"),
    ("S07S-F02-S-FM03", "H"),
]


def build_msp(root, flat=False, label_name="Evalution.txt"):
    blocks = []
    for stem, letter in CLIPS:
        blocks.append(
            f"UTD-IMPROV-{stem}.avi; {letter}; A:3.000000; V:NaN; D:2.500000 ; N:3.200000;\n"
            "rater1; Neutral; ; A:3.0; V:4.0; D:3.0; N:3.0;\n"
        )
        session = f"session{int(stem[6:8])}"
        base = root / session if flat else root / "Audio" / session
        wav = base / stem[:4] / stem[9] / f"MSP-IMPROV-{stem}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, np.sin(np.arange(44100) / 10).astype(np.float32), 44100)  # not 16 kHz
        (root / "All_human_transcriptions").mkdir(exist_ok=True)
        (root / "All_human_transcriptions" / f"MSP-IMPROV-{stem}.txt").write_text(f"words of {stem}\n")
    blocks.append("UTD-IMPROV-broken.avi; A; A:3\n")
    (root / label_name).write_text("\n".join(blocks))


@pytest.mark.parametrize("flat", [False, True])
def test_msp_reader_labels_types_and_media(tmp_path, flat):
    build_msp(tmp_path, flat)
    scan = read_msp_improv(tmp_path, FOUR_CLASS)
    ids = {r.id: r for r in scan.records}
    assert set(ids) == {
        f"MSP-IMPROV-{s}"
        for s in ("S01A-F01-S-FM01", "S01A-F01-S-FM02", "S02H-M01-S-MF01", "S02H-M01-S-MF02", "S07S-F02-S-FM03")
    }
    r = ids["MSP-IMPROV-S07S-F02-S-FM03"]
    assert (r.label, r.speaker, r.session, r.gender) == (
        "hap",
        "F02",
        "session2",
        "F",
    )  # label from the file, not the name
    assert r.text == "words of S07S-F02-S-FM03" and r.audio.path.is_file()
    assert scan.excluded == {"oth": 1, "xxx": 1}
    assert len(scan.problems) == 1 and "Evalution.txt:" in scan.problems[0]
    assert len(load_audio(r.audio, 16000).value) == 16000  # resampled from 44.1 kHz


def test_msp_types_and_exclusion_list(tmp_path):
    build_msp(tmp_path, label_name="Evaluation.txt")
    (tmp_path / "no_face.txt").write_text("UTD-IMPROV-S01A-F01-S-FM01.avi\n")
    scan = read_msp_improv(tmp_path, FOUR_CLASS, types="SRTP", exclude_file=tmp_path / "no_face.txt")
    ids = {r.id for r in scan.records}
    assert "MSP-IMPROV-S04N-M02-R-MF01" in ids and "MSP-IMPROV-S01A-F01-S-FM01" not in ids
    assert scan.excluded["(exclusion list)"] == 1


def test_manifest_csv_and_jsonl(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(32000, np.float32), 16000)
    (tmp_path / "t.txt").write_text("from a file\n")
    (tmp_path / "m.csv").write_text(
        "id,label,speaker,session,text,transcript,audio,start,end\n"
        "u1,calm,s1,A,hello,,a.wav,0.5,1.5\n"
        "u2,tense,s2,B,,t.txt,a.wav,,\n"
        "u3,bored,s2,B,x,,,,\n"
    )
    scan = read_manifest(tmp_path / "m.csv", get_label_set("calm,tense"))
    assert [r.id for r in scan.records] == ["u1", "u2"] and scan.excluded == {"bored": 1}
    assert scan.records[1].text == "from a file" and scan.records[0].audio.start == 0.5
    assert len(load_audio(scan.records[0].audio, 16000).value) == 16000
    rows = [{"id": "j1", "label": "ang", "speaker": "p", "fold": "1", "text": "hi"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert read_manifest(tmp_path / "m.jsonl", FOUR_CLASS).records[0].session == "1"


@pytest.mark.parametrize(
    "content, message",
    [
        ("id,label,speaker,session\nu1,ang,,A\n", r"m.csv:2: missing speaker"),
        ("id,label,speaker\nu1,ang,s\n", r"missing session \(or fold\)"),
        ("id,label,speaker,session\nu1,ang,s,A\nu1,hap,s,A\n", "m.csv:3: duplicate id 'u1'"),
        ("id,label,speaker,session,start,end\nu1,ang,s,A,2,1\n", r"m.csv:2: end 1 s is not after start 2 s"),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path, content, message):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(InputDataError, match=message):
        read_manifest(tmp_path / "m.csv", FOUR_CLASS)


def test_msp_dry_run_cli(tmp_path):
    build_msp(tmp_path)
    result = CliRunner().invoke(app, ["msp-improv", "--root", str(tmp_path), "--dry-run"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n_utterances"] == 5 and summary["per_session"] == {"session1": 4, "session2": 1}  # F01, M01 x2; F02
