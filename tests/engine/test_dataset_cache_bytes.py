"""robult_engine.data.cache.DatasetCache bounded by bytes: least recently used datasets are released when the
tensors kept pass the budget, the dataset on screen never is, a released one is really let go (nothing in the
cache holds it), and one that something else still holds is found again instead of loaded twice."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch

from robult_engine.config import DataConfig
from robult_engine.data import cache as C
from robult_engine.data.base import DatasetBundle, DatasetInfo, ModalitySpec, SplitData

MB = 1024 ** 2


def fake_bundle(megabytes: float, name: str) -> DatasetBundle:
    """A dataset whose tensors take `megabytes` (float32 features; the mask and target are a few bytes)."""
    n = 16
    d = int(megabytes * MB / 4 / n)
    split = SplitData(inputs={"x": torch.zeros(n, d), "y": torch.zeros(n, 1)}, lengths={},
                      mask=torch.ones(n, 2, dtype=torch.bool), target=torch.zeros(n, dtype=torch.long))
    info = DatasetInfo(name, (ModalitySpec("x", "vector", (d,)), ModalitySpec("y", "vector", (1,))), "single-label",
                       ("a", "b"))
    return DatasetBundle(info, {"train": split})


SIZES = {"a": 3, "b": 3, "c": 3, "big": 9}


@pytest.fixture
def loads(monkeypatch):
    """Datasets named a, b, c (3 MB each) and big (9 MB), loaded by a counting fake loader."""
    seen = []

    def fake_load(cfg):
        seen.append(cfg.dataset)
        return fake_bundle(SIZES[cfg.dataset], cfg.dataset)
    monkeypatch.setattr(C, "load_dataset", fake_load)
    return seen


def named(name: str, modalities=()) -> DataConfig:
    """A config naming one of the fake datasets (keyed as a path by the cache)."""
    return DataConfig(dataset=name, modalities=tuple(modalities))


def names(cache) -> list[str]:
    """The datasets kept, least recently used first."""
    from pathlib import Path
    return [Path(k[-1]).name for k in cache.keys()]


def test_least_recently_used_datasets_go_when_the_bytes_pass_the_budget(loads):
    cache = C.DatasetCache(max_items=None, max_bytes=7 * MB)
    cache.get(named("a"))
    cache.get(named("b"))
    assert names(cache) == ["a", "b"] and cache.nbytes == pytest.approx(6 * MB, rel=0.01)
    cache.get(named("a"))  # a is now the most recently used
    cache.get(named("c"))  # 9 MB > 7 MB: b goes, not a
    assert names(cache) == ["a", "c"]
    gc.collect()
    cache.get(named("b"))
    assert loads == ["a", "b", "c", "b"]  # b was released, so loaded again


def test_the_dataset_on_screen_is_never_evicted_and_the_others_are_released_at_once(loads):
    cache = C.DatasetCache(max_items=None, max_bytes=7 * MB)
    cache.set_shown(named("big"))
    big = weakref.ref(cache.get(named("big")))  # alone over the budget: kept, it is on screen
    gc.collect()
    assert names(cache) == ["big"] and big() is not None
    cache.get(named("a"))
    gc.collect()
    assert names(cache) == ["big"]  # a (least recently used, not shown) had to go
    cache.set_shown(named("a"))  # switching away from big releases it now, before anything else loads
    cache.get(named("a"))
    gc.collect()
    assert names(cache) == ["a"]
    assert big() is None  # nothing in the cache holds the big one any more: its memory is free


def test_a_released_dataset_still_held_elsewhere_is_found_not_loaded_twice(loads):
    cache = C.DatasetCache(max_items=None, max_bytes=4 * MB)
    held = cache.get(named("a", modalities=("x",)))  # e.g. a training run on a selection of its modalities
    cache.get(named("b"))  # a is released from the cache, but the selection keeps it alive
    assert names(cache) == ["b"]
    again = cache.get(named("a"))
    assert loads == ["a", "b"] and again.splits["train"].inputs["x"] is held.splits["train"].inputs["x"]


def test_a_count_bound_still_applies(loads):
    cache = C.DatasetCache(max_items=2, max_bytes=100 * MB)
    for name in ("a", "b", "c"):
        cache.get(named(name))
    assert names(cache) == ["b", "c"]


def test_bytes_count_each_storage_once():
    b = fake_bundle(2, "x")
    assert C.bundle_nbytes(b) == pytest.approx(2 * MB, rel=0.01)
    sel = b.select_modalities(("x",))  # a view of the same tensors
    both = DatasetBundle(b.info, {"train": b.splits["train"], "test": sel.splits["train"]})
    assert C.bundle_nbytes(both) == pytest.approx(C.bundle_nbytes(b), abs=64)  # only its own mask is new
    copy = DatasetBundle(b.info, {"train": b.splits["train"], "test": b.splits["train"].subset(range(16))})
    assert C.bundle_nbytes(copy) == pytest.approx(2 * C.bundle_nbytes(b), rel=0.01)  # a copy counts twice


def test_the_default_budget_and_its_setting(monkeypatch):
    monkeypatch.delenv(C.ENV_MAX_BYTES, raising=False)
    ram = C.physical_memory()
    assert C.default_max_bytes() == (min(2 * 1024 ** 3, ram // 4) if ram else 2 * 1024 ** 3)
    assert C.DatasetCache().max_bytes == C.default_max_bytes()
    monkeypatch.setenv(C.ENV_MAX_BYTES, "512M")
    assert C.DatasetCache().max_bytes == 512 * MB
    assert C.DatasetCache(max_bytes=123).max_bytes == 123
    assert [C.parse_bytes(t) for t in ("1024", "2G", "1.5k", "3 MiB", "4gb")] == [1024, 2 * 1024 ** 3, 1536,
                                                                                   3 * MB, 4 * 1024 ** 3]
    with pytest.raises(ValueError, match="not a size"):
        C.parse_bytes("lots")


def test_real_datasets_through_the_budget():
    """Two PID-Synth contents with a budget of one: the one on screen stays, the other is released."""
    one = C.bundle_nbytes(C.load_dataset(DataConfig(dataset="pid-synth", synth_n_train=200)))
    cache = C.DatasetCache(max_bytes=int(one * 1.5))
    first, second = DataConfig(dataset="pid-synth", synth_n_train=200), DataConfig(dataset="pid-synth",
                                                                                 synth_n_train=200, seed=1)
    cache.set_shown(first)
    cache.get(first)
    cache.get(second)
    gc.collect()
    assert first in cache and second not in cache
    cache.set_shown(second)
    cache.get(second)
    gc.collect()
    assert second in cache and first not in cache
