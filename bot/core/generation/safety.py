"""Keeping generated text safe to post: no invite links, no recited training tweets.

Small corpora make models recite their data. Each trained model keeps a set of hashed word
6-grams of its training tweets (`ngrams.npy`, one-way hashes, not the text); a generated tweet
that equals a training tweet, or shares most of its 6-grams with them, is thrown away and
sampled again.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

NGRAM_FILE = "ngrams.npy"
N = 6
NEAR_COPY_SHARE = 0.6  # this share of a tweet's 6-grams seen in training = a near copy

_INVITE_RE = re.compile(
    r"(?:https?://)?(?:www\.)?(?:discord(?:app)?\.com/invite|discord\.gg|dsc\.gg)/\S*", re.IGNORECASE
)
_URL_RE = re.compile(r"https?://\S*|www\.\S+", re.IGNORECASE)
_WORD_RE = re.compile(r"[\w@#']+")


def strip_links(text: str) -> str:
    """Drop invite links and URLs (training data had its URLs removed, so these are made up)."""
    text = _URL_RE.sub("", _INVITE_RE.sub("", text))
    return " ".join(text.split())


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _hash(words: list[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest(), "little")


def _fingerprints(text: str) -> tuple[int, list[int]]:
    words = _words(text)
    grams = [_hash(words[i : i + N]) for i in range(len(words) - N + 1)]
    return _hash(["\x00whole", *words]), grams


def build_index(tweets: list[str]) -> np.ndarray:
    hashes: set[int] = set()
    for tweet in tweets:
        whole, grams = _fingerprints(tweet)
        hashes.add(whole)
        hashes.update(grams)
    return np.array(sorted(hashes), dtype=np.uint64)


def save_index(tweets: list[str], folder: Path) -> None:
    np.save(folder / NGRAM_FILE, build_index(tweets))


class MemorizationIndex:
    def __init__(self, hashes: np.ndarray):
        self.hashes = hashes

    @classmethod
    def load(cls, folder: str | Path) -> MemorizationIndex | None:
        path = Path(folder) / NGRAM_FILE
        return cls(np.load(path)) if path.is_file() else None

    def _contains(self, values: list[int]) -> np.ndarray:
        arr = np.array(values, dtype=np.uint64)
        pos = np.searchsorted(self.hashes, arr)
        pos[pos >= len(self.hashes)] = 0
        return self.hashes[pos] == arr if len(self.hashes) else np.zeros(len(arr), bool)

    def is_copy(self, text: str) -> bool:
        whole, grams = _fingerprints(text)
        if self._contains([whole])[0]:
            return True
        if not grams:
            return False
        return float(self._contains(grams).mean()) >= NEAR_COPY_SHARE
