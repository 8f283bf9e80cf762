"""The IEMOCAP reader on the real label headers: the paper's 4-class counts, exactly."""

from __future__ import annotations

import pytest
from cmarr.extract.corpora.iemocap import read_iemocap, video_half
from cmarr.shared.labels import FOUR_CLASS, IEMOCAP_ALL

from tests.iemocap_skeleton import handbook_labels, write_skeleton


@pytest.fixture(scope="module")
def skeleton(tmp_path_factory):
    lines = handbook_labels().read_text().splitlines()
    assert len(lines) == 10039
    root = tmp_path_factory.mktemp("iemocap") / "IEMOCAP_full_release"
    write_skeleton(root, lines)
    return root


def test_four_class_counts_match_the_paper(skeleton):
    scan = read_iemocap(skeleton, FOUR_CLASS)
    s = scan.summary()
    assert s["n_utterances"] == 5531
    assert s["per_class"] == {"ang": 1103, "hap": 1636, "neu": 1708, "sad": 1084}
    assert s["per_session"] == {"Ses01": 1085, "Ses02": 1023, "Ses03": 1151, "Ses04": 1031, "Ses05": 1241}
    assert s["problems"] == []
    assert s["media"]["text"] == 5531  # every labelled utterance found its transcript line


def test_speaker_is_the_utterance_letter_not_the_dialog_letter(skeleton):
    scan = read_iemocap(skeleton, FOUR_CLASS)
    per_speaker = scan.summary()["per_speaker"]
    # CORPORA.md: 4-class counts per speaker (F/M) for S1..S5
    expected = {1: (528, 557), 2: (481, 542), 3: (522, 629), 4: (528, 503), 5: (590, 651)}
    for s, (f, m) in expected.items():
        assert (per_speaker[f"Ses0{s}F"], per_speaker[f"Ses0{s}M"]) == (f, m)


def test_all_labels_and_irregular_dialogs(skeleton):
    scan = read_iemocap(skeleton, IEMOCAP_ALL)
    assert scan.summary()["n_utterances"] == 10039 - 2507  # everything but 'xxx'
    assert scan.excluded == {"xxx": 2507}
    dialogs = {r.dialog for r in scan.records}
    assert {"Ses03M_impro05a", "Ses03M_impro08b", "Ses05M_script01_1b"} <= dialogs
    assert "Ses01F_impro08" not in dialogs


def test_media_paths_and_video_half():
    assert video_half("Ses01F_impro01_F000") == "left" and video_half("Ses01F_impro01_M000") == "right"
    assert video_half("Ses01M_impro01_M000") == "left" and video_half("Ses01M_impro01_F000") == "right"


def test_record_paths(skeleton):
    rec = next(r for r in read_iemocap(skeleton, FOUR_CLASS).records if r.id == "Ses01F_impro01_F000")
    assert rec.audio.path == skeleton / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    assert rec.video.path == skeleton / "Session1/dialog/avi/DivX/Ses01F_impro01.avi"
    assert (rec.video.start, rec.video.end, rec.video.half) == (6.2901, 8.2357, "left")
    assert rec.text == "I am saying F000 out loud." and rec.speaker == "Ses01F"


def test_a_broken_header_is_reported_with_file_and_line(tmp_path):
    write_skeleton(tmp_path, ["[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]"])
    label_file = tmp_path / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    label_file.write_text(label_file.read_text() + "[6.29 - 8.2]\tSes01F_impro01_F001\tneu\n")
    scan = read_iemocap(tmp_path, FOUR_CLASS)
    assert len(scan.records) == 1
    assert scan.problems and scan.problems[0].startswith(f"{label_file}:")


def test_dry_run_command_on_the_skeleton(skeleton):
    import json

    from cmarr.extract.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["iemocap", "--root", str(skeleton), "--dry-run"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["n_utterances"] == 5531
    assert s["per_class"] == {"ang": 1103, "hap": 1636, "neu": 1708, "sad": 1084}
    assert list(s["per_session"].values()) == [1085, 1023, 1151, 1031, 1241]
