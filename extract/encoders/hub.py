"""Loading pretrained models by hub id or local path, with a clear error when they are absent."""

from __future__ import annotations

from pathlib import Path

from cmarr.shared.errors import ConfigError


def load_pretrained(cls, name: str, revision: str, modality: str):
    """`cls.from_pretrained(name)`; a missing model is a ConfigError saying how to get it."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress reporting covers loading
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
