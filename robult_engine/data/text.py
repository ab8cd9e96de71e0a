"""Text front-end: raw text → hashed word uni+bi-gram ids for the hashed bag-of-n-grams encoder.

Tokens are lower-cased words (unicode letters/digits, with inner apostrophes: "don't" stays one token).
The ids of a text, in reading order, are  u(w1), b(w1 w2), u(w2), b(w2 w3), ...  so truncating to `max_len`
keeps the beginning of the text whole. An n-gram's id is 1 + crc32("u:" + word or "b:" + w1 + " " + w2)
mod (buckets − 1): stable across processes and machines (Python's `hash` is salted per process), and never
0, which is the padding id the encoder skips.
"""
from __future__ import annotations

import re
import zlib
from typing import Sequence

import torch

from .base import DataError

DEFAULT_BUCKETS = 2 ** 15  # matches ModelConfig.text_buckets
DEFAULT_MAX_LEN = 256

_WORD = re.compile(r"\w+(?:'\w+)*", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-cased words of `text` ("Don't STOP!" → ["don't", "stop"])."""
    return _WORD.findall(text.lower())


def _bucket(key: str, buckets: int) -> int:
    return 1 + zlib.crc32(key.encode("utf-8")) % (buckets - 1)


def hash_ngrams(text: str, buckets: int = DEFAULT_BUCKETS, max_len: int = DEFAULT_MAX_LEN) -> torch.Tensor:
    """Hashed uni+bi-gram ids of one text: int64 (n,) with n ≤ max_len, ids in 1..buckets−1.

    An empty text (no words) gives an empty tensor; `encode_texts` pads it.
    """
    if not isinstance(text, str):
        raise DataError(f"text must be a string, got {type(text).__name__}")
    if buckets < 2:
        raise DataError(f"text buckets must be >= 2, got {buckets}")
    if max_len < 1:
        raise DataError(f"text max_len must be >= 1, got {max_len}")
    words = tokenize(text)
    ids: list[int] = []
    for i, w in enumerate(words):
        ids.append(_bucket("u:" + w, buckets))
        if i + 1 < len(words):
            ids.append(_bucket("b:" + w + " " + words[i + 1], buckets))
        if len(ids) >= max_len:
            break
    return torch.tensor(ids[:max_len], dtype=torch.long)


def encode_texts(texts: Sequence[str], buckets: int = DEFAULT_BUCKETS, max_len: int = DEFAULT_MAX_LEN,
                 pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode a list of texts as padded ids (N, L) and lengths (N,).

    L is `pad_to` when given (longer texts are truncated), else the longest encoded text (at least 1).
    Lengths are at least 1 (DatasetInfo convention: never 0); an empty text is all padding.
    """
    encoded = [hash_ngrams(t, buckets, max_len) for t in texts]
    width = pad_to if pad_to is not None else max([1] + [len(e) for e in encoded])
    ids = torch.zeros(len(encoded), width, dtype=torch.long)  # (N, L), 0 = padding
    lengths = torch.ones(len(encoded), dtype=torch.long)  # (N,)
    for i, e in enumerate(encoded):
        n = min(len(e), width)
        ids[i, :n] = e[:n]
        lengths[i] = max(1, n)
    return ids, lengths
