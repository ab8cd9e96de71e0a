"""Text front-end: stable hashed uni+bi-gram ids, padding and lengths."""
from __future__ import annotations

import subprocess
import sys
import zlib

import pytest
import torch

from robult_engine.data import DataError
from robult_engine.data.text import encode_texts, hash_ngrams, tokenize


def test_tokenize_lowercases_words():
    assert tokenize("Don't STOP, the café's 2 cats!") == ["don't", "stop", "the", "café's", "2", "cats"]
    assert tokenize("  \n\t ") == []


def test_ids_by_hand():
    """Ids are 1 + crc32 of 'u:'/'b:' keys mod (buckets − 1), interleaved in reading order."""
    buckets = 1000
    ids = hash_ngrams("Hello world", buckets=buckets).tolist()
    expected = [1 + zlib.crc32(k.encode()) % (buckets - 1) for k in ("u:hello", "b:hello world", "u:world")]
    assert ids == expected


def test_range_dtype_and_truncation():
    t = hash_ngrams(" ".join(f"w{i}" for i in range(500)), buckets=64, max_len=256)
    assert t.dtype == torch.long and t.shape == (256,)
    assert int(t.min()) >= 1 and int(t.max()) <= 63
    assert hash_ngrams("", 64).shape == (0,)


def test_hash_is_stable_across_processes():
    """Python's str hash is salted per process; ours must not be."""
    code = "from robult_engine.data.text import hash_ngrams; print(hash_ngrams('stable ids please').tolist())"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")}
    assert len(outs) == 1 and outs.pop().strip() == str(hash_ngrams("stable ids please").tolist())


def test_encode_texts_pads_and_lengths():
    ids, lengths = encode_texts(["a b c", "", "d"], buckets=128)
    assert ids.shape == (3, 5) and ids.dtype == torch.long
    assert lengths.tolist() == [5, 1, 1]  # never 0
    assert ids[1].tolist() == [0] * 5 and ids[2, 1:].tolist() == [0] * 4
    ids2, lengths2 = encode_texts(["a b c"], buckets=128, pad_to=2)
    assert ids2.shape == (1, 2) and lengths2.tolist() == [2]


def test_bad_arguments():
    with pytest.raises(DataError):
        hash_ngrams(123)  # type: ignore[arg-type]
    with pytest.raises(DataError):
        hash_ngrams("x", buckets=1)
