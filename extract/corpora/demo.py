"""The built-in demo corpus, generated in the IEMOCAP layout so the real reader, video cropping,
face detection and all encoders run on it.

Every modality carries a learnable emotion signal:
- text: emotion-bearing sentences (with shared neutral filler words);
- speech: a synthetic voice whose pitch, contour, tempo, loudness and brightness depend on the class;
- video: a real face photo (`skimage.data.astronaut()`) in the speaker's half of a 720x480
  split-screen dialog video, with a per-class expression change while the speaker talks.
Each cue is absent from a share of utterances (a neutral-topic sentence, a face that does not
change), independently per modality, so no single modality is enough: conditions with fewer
modalities score lower, which is the missing-modality effect CM-ARR is about.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from cmarr.shared.errors import ConfigError

CLASSES = ("ang", "hap", "neu", "sad")
SENTENCES = {
    "ang": [
        "I am furious about this",
        "this is completely unacceptable",
        "get out of my way right now",
        "I hate the way you treat me",
        "stop lying to me",
        "how dare you say that to me",
        "I am sick and tired of your excuses",
        "you ruined everything again",
    ],
    "hap": [
        "I am so happy for you",
        "this is wonderful news",
        "we won and I can not believe it",
        "I love this so much",
        "what a fantastic surprise",
        "that made my whole day",
        "I am thrilled we are finally here",
        "this is the best gift ever",
    ],
    "neu": [
        "the meeting is at three o'clock",
        "please fill out this form",
        "the bus leaves from the station",
        "I need to check my schedule",
        "the office is on the second floor",
        "we can talk about it tomorrow",
        "the form needs your signature",
        "it takes about twenty minutes",
    ],
    "sad": [
        "I miss her every single day",
        "nothing will ever be the same",
        "I feel so lonely tonight",
        "he passed away last night",
        "I lost everything I had",
        "I wish things were different",
        "nobody came to see me",
        "it hurts so much to remember",
    ],
}
FILLERS = ["", "well, ", "you know, ", "okay, ", "so ", "honestly, "]
# Sentences that carry no emotion, used for any label when the text cue is absent.
TOPICS = [
    "the train was late again this morning",
    "she said the package arrives on monday",
    "we moved the table into the other room",
    "the store closes at nine tonight",
    "my brother called about the car",
    "they painted the house last summer",
]
CUE_ABSENT = 0.35  # per modality, the share of utterances whose cue is left out
# Voice per class: f0 (Hz, before the speaker's gender scale), contour slope, syllables/s, level, tilt
VOICE = {
    "ang": (165.0, 0.0, 6.0, 0.65, 0.6),
    "hap": (205.0, 0.25, 5.0, 0.40, 0.8),
    "neu": (125.0, -0.05, 4.0, 0.25, 1.0),
    "sad": (100.0, -0.25, 2.5, 0.12, 1.4),
}
VAD = {
    "ang": "[2.0000, 4.0000, 4.0000]",
    "hap": "[4.0000, 3.5000, 3.0000]",
    "neu": "[3.0000, 2.5000, 2.5000]",
    "sad": "[1.5000, 2.0000, 2.0000]",
}
MARKER = "cmarr-demo.json"  # written last: the generation's settings, and the sign that it completed
SAMPLE_RATE = 16000
FRAME = (480, 720)  # rows, cols: IEMOCAP's split-screen size
CONTENT_ROWS = (112, 368)  # letterboxed picture inside each pane


@dataclass(frozen=True)
class DemoUtterance:
    id: str
    code: str  # IEMOCAP consensus code as written to EmoEvaluation (exc for some happy ones)
    label: str
    start: float
    end: float
    text: str


def ensure_demo_corpus(root: Path, utterances_per_dialog: int | None, seed: int | None, log=print) -> Path:
    """The demo corpus at `root`, generated first when it is not there (24 utterances per dialog,
    seed 0 unless given). A corpus generated with other settings than those given, or a folder
    that is not a complete demo corpus, is refused (ConfigError)."""
    asked = {"utterances_per_dialog": utterances_per_dialog, "seed": seed}
    asked = {k: v for k, v in asked.items() if v is not None}
    marker = root / MARKER
    if marker.is_file():
        found = json.loads(marker.read_text())
        if other := {k: found.get(k) for k, v in asked.items() if found.get(k) != v}:
            raise ConfigError(
                f"{root}: a demo corpus generated with {other}, not {asked}; drop those options to use it, "
                "or choose another --corpus-dir"
            )
        return root
    if root.exists() and any(root.iterdir()):
        raise ConfigError(
            f"{root}: not a complete demo corpus (no {MARKER}); remove it to generate it again, or choose another "
            "--corpus-dir"
        )
    log(f"generating the demo corpus in {root}")
    return generate_demo_corpus(root, **asked)


def generate_demo_corpus(
    root: str | Path, sessions: int = 5, utterances_per_dialog: int = 24, seed: int = 0, video_fps: float = 15.0
) -> Path:
    """Write `root/IEMOCAP_full_release`-style folders; returns the corpus root. Atomic: the corpus
    is generated in a hidden sibling folder and renamed to `root` when complete, so a generation
    that is killed or runs out of disk never leaves a partial corpus under `root`."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root)
    tmp = root.with_name(f".{root.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _generate(tmp, sessions, utterances_per_dialog, seed, video_fps)
        settings = _settings(sessions=sessions, utterances_per_dialog=utterances_per_dialog, seed=seed, fps=video_fps)
        (tmp / MARKER).write_text(json.dumps(settings))
        os.rename(tmp, root)  # replaces an empty folder; a complete corpus another process made wins
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (root / MARKER).is_file():
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk gets its space back
        raise
    return root


def _settings(sessions: int = 5, utterances_per_dialog: int = 24, seed: int = 0, fps: float = 15.0) -> dict:
    return {"sessions": sessions, "utterances_per_dialog": utterances_per_dialog, "seed": seed, "video_fps": fps}


def _remove_abandoned(root: Path) -> None:
    """Partial corpora of generations that were killed (their process is gone)."""
    for partial in root.parent.glob(f".{root.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _generate(root: Path, sessions: int, utterances_per_dialog: int, seed: int, video_fps: float) -> None:
    rng = np.random.default_rng(seed)
    face = _face_image()
    for s in range(1, sessions + 1):
        lead = "FM"[(s + 1) % 2]
        dialog = f"Ses0{s}{lead}_impro0{s}" if s != 3 else f"Ses0{s}{lead}_impro05a"  # an irregular name
        utts = _timeline(dialog, utterances_per_dialog, rng)
        session = root / f"Session{s}"
        _write_labels(session, dialog, utts)
        _write_transcripts(session, dialog, utts)
        for u in utts:
            _write_wav(session / "sentences" / "wav" / dialog / f"{u.id}.wav", u, rng)
        _write_video(session / "dialog" / "avi" / "DivX" / f"{dialog}.avi", dialog, utts, face, rng, video_fps)


def _timeline(dialog: str, n: int, rng: np.random.Generator) -> list[DemoUtterance]:
    """Alternating speakers, each class equally often per speaker, plus two unlabelled turns."""
    labels = [CLASSES[k % 4] for k in range(n)]
    rng.shuffle(labels)
    labels += ["xxx", "fru"]  # outside the 4-class set: the reader must skip them
    t, counters, out = 0.5, {"F": 0, "M": 0}, []
    for k, label in enumerate(labels):
        speaker = "FM"[k % 2]
        duration = float(rng.uniform(1.2, 2.2))
        code = "exc" if label == "hap" and rng.random() < 0.4 else label
        pool = TOPICS if rng.random() < CUE_ABSENT else SENTENCES.get(label, SENTENCES["neu"])
        text = (FILLERS[rng.integers(len(FILLERS))] + pool[rng.integers(len(pool))]).capitalize() + "."
        out.append(
            DemoUtterance(
                f"{dialog}_{speaker}{counters[speaker]:03d}",
                code,
                label if label in CLASSES else "",
                round(t, 4),
                round(t + duration, 4),
                text,
            )
        )
        counters[speaker] += 1
        t += duration + float(rng.uniform(0.2, 0.6))
    return out


def _write_labels(session: Path, dialog: str, utts: list[DemoUtterance]) -> None:
    folder = session / "dialog" / "EmoEvaluation"
    (folder / "Categorical").mkdir(parents=True, exist_ok=True)
    blocks = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n"]
    for u in utts:
        vad = VAD.get(u.label, "[2.5000, 3.0000, 3.0000]")
        blocks.append(
            f"[{u.start:.4f} - {u.end:.4f}]\t{u.id}\t{u.code}\t{vad}\n"
            f"C-E1:\t{u.code.capitalize()};\t()\nA-E1:\tval 3; act 3; dom  3;\t()\n"
        )
    (folder / f"{dialog}.txt").write_text("\n".join(blocks) + "\n")
    (folder / "Categorical" / f"{dialog}_e1_cat.txt").write_text("".join(f"{u.id} :{u.code}; ()\n" for u in utts))


def _write_transcripts(session: Path, dialog: str, utts: list[DemoUtterance]) -> None:
    folder = session / "dialog" / "transcriptions"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{u.id} [{u.start:08.4f}-{u.end:08.4f}]: {u.text}\n" for u in utts]
    (folder / f"{dialog}.txt").write_text("".join(lines))


def synth_voice(label: str, gender: str, duration: float, rng: np.random.Generator) -> np.ndarray:
    """A voiced signal with class-dependent prosody: harmonics under syllable envelopes, plus breath."""
    f0, slope, rate, level, tilt = VOICE.get(label, VOICE["neu"])
    n = int(round(duration * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    f0 = f0 * (1.45 if gender == "F" else 1.0) * rng.uniform(0.92, 1.08)
    contour = f0 * (1 + slope * (t / duration - 0.5)) * (1 + 0.03 * np.sin(2 * np.pi * 5.5 * t))
    if label == "ang":
        contour *= 1 + 0.04 * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1))
    phase = 2 * np.pi * np.cumsum(contour) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k**tilt for k in range(1, 16) if k * f0 < 7000)
    syllable = 0.5 - 0.5 * np.cos(2 * np.pi * rate * rng.uniform(0.85, 1.15) * t)
    signal = level * rng.uniform(0.8, 1.2) * syllable**1.5 * voice / 2.0
    signal += 0.01 * rng.standard_normal(n)
    return np.clip(signal, -1, 1).astype(np.float32)


def _write_wav(path: Path, u: DemoUtterance, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = synth_voice(u.label, u.id[-4], u.end - u.start, rng)
    sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")


def _face_image() -> np.ndarray:
    """The astronaut photo cropped around the face, sized to sit in the letterboxed pane."""
    from PIL import Image
    from skimage import data

    crop = data.astronaut()[0:300, 80:380]
    return np.asarray(Image.fromarray(crop).resize((220, 220)))


def expression(face: np.ndarray, label: str, rng: np.random.Generator) -> np.ndarray:
    """A per-class change of the face (brightness, contrast, brow and mouth shading), with jitter."""
    img = face.astype(np.float32)
    if label == "hap":
        img = img + 45
        img[150:175, 80:150] += 40  # bright, open mouth region
    elif label == "sad":
        img = 0.65 * img
        img[150:175, 80:150] *= 0.5
    elif label == "ang":
        img = (img - img.mean()) * 1.6 + img.mean()
        img[55:75, 70:160] *= 0.35  # lowered, dark brows
    img += rng.normal(0, 4)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_video(
    path: Path, dialog: str, utts: list[DemoUtterance], face: np.ndarray, rng: np.random.Generator, fps: float
) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    lead = dialog[5]
    duration = utts[-1].end + 0.5
    # a share of speakers keep a still face whatever they feel (the video cue is absent)
    expressions = {u.id: expression(face, u.label if rng.random() >= CUE_ABSENT else "neu", rng) for u in utts}
    neutral = face
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = FRAME[1], FRAME[0], "yuv420p"
        stream.bit_rate = 2_000_000
        for k in range(int(duration * fps)):
            t = k / fps
            frame = np.zeros((*FRAME, 3), np.uint8)
            panes = {"left": neutral, "right": neutral}
            for u in utts:
                if u.start <= t <= u.end:
                    panes["left" if u.id[-4] == lead else "right"] = expressions[u.id]
            for half, img in panes.items():
                x0 = 70 + (0 if half == "left" else 360)
                y0 = CONTENT_ROWS[0] + 18
                frame[y0 : y0 + 220, x0 : x0 + 220] = img
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
