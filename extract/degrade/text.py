"""Text degraders, ASR-like: words dropped (deletions) and words swapped (substitutions).

Words are the transcript's whitespace-separated tokens; each is dropped with probability
`word_drop` and, independently, swapped with probability `word_swap` (a word drawn for both
is dropped). A swapped word keeps its surrounding punctuation and becomes, with even odds,
- another word of the corpus vocabulary whose length differs from it by at most one letter
  (a recogniser's confusion of two words; any such word, not a phonetic neighbour), or
- a one-letter edit of itself: a letter substituted, deleted or inserted (a misrecognition that
  the text encoder's word pieces read as a new word).
Transcripts are degraded when extraction starts, since they are in the records: the vocabulary
is the whole corpus's, and every utterance draws from its own seed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
from cmarr.extract.degrade.spec import TextSpec, utterance_rng

WORD = re.compile(r"^(\W*)(.*?)(\W*)$")  # leading punctuation, the word, trailing punctuation
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def vocabulary(texts: Iterable[str | None]) -> dict[int, list[str]]:
    """The corpus's distinct words (lower case, punctuation stripped), by length."""
    words = {WORD.match(t).group(2).lower() for text in texts if text for t in text.split()}
    by_length: dict[int, list[str]] = {}
    for word in sorted(w for w in words if w):
        by_length.setdefault(len(word), []).append(word)
    return by_length


def drop_words(words: list[str], p: float, rng: np.random.Generator) -> list[str]:
    """Each word kept with probability 1 - p."""
    keep = rng.random(len(words)) >= p
    return [w for w, k in zip(words, keep) if k]


def swap_words(words: list[str], p: float, vocab: dict[int, list[str]], rng: np.random.Generator) -> list[str]:
    """Each word replaced with probability p (see the module docstring)."""
    swap = rng.random(len(words)) < p
    return [_swapped(w, vocab, rng) if s else w for w, s in zip(words, swap)]


def _swapped(token: str, vocab: dict[int, list[str]], rng: np.random.Generator) -> str:
    lead, word, trail = WORD.match(token).groups()
    if not word:
        return token
    near = [v for n in (len(word) - 1, len(word), len(word) + 1) for v in vocab.get(n, []) if v != word.lower()]
    if near and rng.random() < 0.5:
        return lead + near[int(rng.integers(len(near)))] + trail
    return lead + letter_edit(word, rng) + trail


def letter_edit(word: str, rng: np.random.Generator) -> str:
    """`word` with one letter substituted (by another), deleted (words of two letters or more) or inserted."""
    op, at = int(rng.integers(3)), int(rng.integers(len(word)))
    if op == 1 and len(word) > 1:
        return word[:at] + word[at + 1 :]
    if op == 2:
        return word[:at] + LETTERS[int(rng.integers(26))] + word[at:]
    others = [c for c in LETTERS if c != word[at].lower()]
    return word[:at] + others[int(rng.integers(len(others)))] + word[at + 1 :]


def degrade_text(text: str, spec: TextSpec, seed: int, utterance: str, vocab: dict[int, list[str]]) -> str:
    """One transcript, degraded as `spec` says from the utterance's own seed; the words are joined by
    single spaces. Every word dropped gives an empty transcript: a missing text, as an empty file."""
    words = text.split()
    if spec.word_swap:
        words = swap_words(words, spec.word_swap, vocab, utterance_rng(seed, utterance, "text", "word-swap"))
    if spec.word_drop:  # its draws are per position, so they do not depend on the swaps
        words = drop_words(words, spec.word_drop, utterance_rng(seed, utterance, "text", "word-drop"))
    return " ".join(words)
