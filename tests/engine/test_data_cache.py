"""robult_engine.data.cache.DatasetCache: one load per content key, modality selections per request, LRU."""
from __future__ import annotations

import gc
import threading

from robult_engine.config import DataConfig
from robult_engine.data import cache as C


def test_one_load_per_key_and_a_selection_per_request(monkeypatch):
    loads = []
    real = C.load_dataset

    def counting(cfg):
        loads.append(cfg)
        return real(cfg)
    monkeypatch.setattr(C, "load_dataset", counting)
    cache = C.DatasetCache(max_items=2)
    cfg = DataConfig(dataset="pid-synth", synth_n_train=100)
    barrier = threading.Barrier(3)
    got = []

    def worker():
        barrier.wait()
        got.append(cache.get(cfg))
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(loads) == 1 and got[0] is got[1] is got[2]  # concurrent callers waited for the one load
    sub = cache.get(DataConfig(dataset="pid-synth", synth_n_train=100, modalities=("m1",)))
    assert sub.info.modality_names == ("m1",) and len(loads) == 1  # the same load, another selection
    cache.get(DataConfig(dataset="pid-synth", synth_n_train=100, seed=1))  # another content: another load
    cache.get(DataConfig(dataset="pid-synth", synth_n_train=120))
    assert len(loads) == 3
    del got[:], sub  # nothing holds the first load any more (a held one would be found again, not reloaded)
    gc.collect()
    cache.get(cfg)  # evicted (max_items=2, least recently used)
    assert len(loads) == 4


def test_keys():
    assert C.dataset_key(DataConfig(dataset="av-digits", seed=3, modalities=("image",))) == ("av-digits",)
    a = C.dataset_key(DataConfig(dataset="pid-synth", synth_noise=0.1))
    assert a != C.dataset_key(DataConfig(dataset="pid-synth", synth_noise=0.2))
    assert C.dataset_key(DataConfig(dataset="./x/../y"))[0] == "path"
