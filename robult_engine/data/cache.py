"""`DatasetCache`: loaded datasets, keyed by what determines their content. Thread-safe.

    cache = DatasetCache(max_items=4)
    bundle = cache.get(data_cfg)      # loads at most once per key at a time; blocks while loading

`data_cfg.modalities` does not change the key: the whole dataset is loaded once and every request gets its
own modality selection of it. The PID-Synth generator's fields and seed are part of its key; a path is keyed
by its resolved location. The `max_items` most recently used bundles are kept.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
from pathlib import Path

from . import BUILTIN, choose_modalities, load_dataset
from .base import DatasetBundle


def dataset_key(data_cfg) -> tuple:
    """What determines the content of the dataset a DataConfig names (modalities excluded)."""
    name = data_cfg.dataset
    if name == "pid-synth":
        synth = tuple((f.name, getattr(data_cfg, f.name)) for f in dataclasses.fields(data_cfg)
                      if f.name.startswith("synth_"))
        return ("pid-synth", data_cfg.seed, synth)
    if name in BUILTIN:
        return (name,)
    try:
        return ("path", str(Path(name).expanduser().resolve()))
    except OSError:
        return ("path", name)


class DatasetCache:
    def __init__(self, max_items: int = 4) -> None:
        self.max_items = max_items
        self._lock = threading.Lock()
        self._items: collections.OrderedDict[tuple, DatasetBundle] = collections.OrderedDict()
        self._key_locks: dict[tuple, threading.Lock] = {}

    def get(self, data_cfg) -> DatasetBundle:
        """The dataset `data_cfg` names with its modality selection, loaded once per key."""
        k = dataset_key(data_cfg)
        with self._lock:
            bundle = self._items.get(k)
            if bundle is not None:
                self._items.move_to_end(k)
            klock = self._key_locks.setdefault(k, threading.Lock())
        if bundle is None:
            with klock:  # one load per key at a time; a second caller waits for the first one's result
                with self._lock:
                    bundle = self._items.get(k)
                if bundle is None:
                    bundle = load_dataset(dataclasses.replace(data_cfg, modalities=()))
                    with self._lock:
                        self._items[k] = bundle
                        while len(self._items) > self.max_items:
                            self._items.popitem(last=False)
        return choose_modalities(bundle, data_cfg.modalities, data_cfg.dataset)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
