"""Corpus readers: each turns a corpus on disk into `UtteranceRecord`s (see `record.py`)."""

from cmarr.extract.corpora.record import CorpusScan, MediaSpan, UtteranceRecord

__all__ = ["CorpusScan", "MediaSpan", "UtteranceRecord"]
