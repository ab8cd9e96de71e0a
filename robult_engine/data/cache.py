"""`DatasetCache`: loaded datasets, keyed by what determines their content, bounded by bytes. Thread-safe.

    cache = DatasetCache()            # budget: ROBULT_DATASET_CACHE_BYTES, else min(2 GiB, 25 % of RAM)
    cache.set_shown(data_cfg)         # the dataset on screen: never evicted
    bundle = cache.get(data_cfg)      # loads at most once per key at a time; blocks while loading

`data_cfg.modalities` does not change the key: the whole dataset is loaded once and every request gets its
own modality selection of it. The PID-Synth generator's fields and seed are part of its key; a path is keyed
by its resolved location.

What is kept: the datasets' tensors (each storage counted once, `bundle_nbytes`) stay within `max_bytes`,
and at most `max_items` datasets are kept. When a load or a change of the dataset on screen goes over either
bound, the least recently used datasets are released — never the one on screen, which stays even when it
alone is larger than the budget. A released dataset that something else still holds (a training run, the
explorer) is found again by a later `get` instead of being loaded a second time beside it.

The default budget, min(2 GiB, 25 % of physical memory): every built-in dataset is under 30 MB, so 2 GiB
keeps all of them for switching back and forth at no cost; one real-size paper dataset (CMU-MOSEI's
features are 1.87 GB, MM-IMDb's 0.46 GB) fits, and switching from it to another large one releases the one
no longer shown instead of holding both. Working on the dataset on screen (training, the PID) needs about
its own size again, so on a small machine a quarter of the memory is the most a dataset nobody is looking
at may keep. `ROBULT_DATASET_CACHE_BYTES` (bytes, or with a K/M/G suffix: "4G") or `max_bytes` sets it.
"""
from __future__ import annotations

import collections
import ctypes
import ctypes.util
import dataclasses
import gc
import os
import sys
import threading
import weakref
from pathlib import Path

from . import BUILTIN, choose_modalities, load_dataset
from .base import DatasetBundle, MappedRows

DEFAULT_MAX_BYTES = 2 * 1024 ** 3
DEFAULT_RAM_SHARE = 0.25
ENV_MAX_BYTES = "ROBULT_DATASET_CACHE_BYTES"


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


def bundle_nbytes(bundle: DatasetBundle) -> int:
    """Bytes of a dataset's tensors (inputs, lengths, masks, targets of every split), each storage once. A
    memory-mapped modality (`MappedRows`) counts its row index only: its data stay in the files (the kernel's
    page cache), and are never read to be counted."""
    seen: dict[int, int] = {}
    for split in bundle.splits.values():
        for t in (*split.inputs.values(), *split.lengths.values(), split.mask, split.target):
            if isinstance(t, MappedRows):
                seen[t.source.ctypes.data] = t.source.nbytes + t.row.nbytes
                continue
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def physical_memory() -> int | None:
    """Bytes of physical memory, None when the platform does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    if sys.platform == "win32":  # pragma: no cover - Windows
        class _Status(ctypes.Structure):
            _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong), ("total", ctypes.c_ulonglong),
                        ("avail", ctypes.c_ulonglong), ("pf_total", ctypes.c_ulonglong),
                        ("pf_avail", ctypes.c_ulonglong), ("v_total", ctypes.c_ulonglong),
                        ("v_avail", ctypes.c_ulonglong), ("v_ext", ctypes.c_ulonglong)]
        st = _Status()
        st.length = ctypes.sizeof(_Status)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(st)):
            return int(st.total)
    return None


def parse_bytes(text: str) -> int:
    """"2147483648", "2G", "512M", "1.5g" → bytes (K, M, G, T are powers of 1024)."""
    t = str(text).strip().upper().removesuffix("B").removesuffix("I")
    scale = 1
    if t and t[-1] in "KMGT":
        scale = 1024 ** ("KMGT".index(t[-1]) + 1)
        t = t[:-1]
    try:
        value = float(t) * scale
    except ValueError:
        raise ValueError(f"{text!r} is not a size in bytes (e.g. 2147483648, 512M or 2G)") from None
    if value < 0:
        raise ValueError(f"{text!r}: a size cannot be negative")
    return int(value)


def default_max_bytes() -> int:
    """The cache's budget: ROBULT_DATASET_CACHE_BYTES when set, else min(2 GiB, 25 % of physical memory)."""
    env = os.environ.get(ENV_MAX_BYTES, "").strip()
    if env:
        return parse_bytes(env)
    ram = physical_memory()
    return DEFAULT_MAX_BYTES if not ram else min(DEFAULT_MAX_BYTES, int(ram * DEFAULT_RAM_SHARE))


def release_freed_memory() -> None:
    """Hand memory that Python and the C allocator freed back to the system (glibc keeps freed heap pages
    otherwise, so the process's RSS would not go down when a dataset is released)."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = getattr(libc, "malloc_trim", None)
        if trim is not None:
            trim(0)
    except OSError:  # pragma: no cover - not glibc
        pass


class DatasetCache:
    def __init__(self, max_items: int | None = 4, max_bytes: int | None = None) -> None:
        """`max_bytes`: the budget of the datasets' tensors (default: `default_max_bytes()`); `max_items`: at
        most this many datasets (None: no count bound)."""
        self.max_items = max_items
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
        self._lock = threading.Lock()
        self._items: collections.OrderedDict[tuple, DatasetBundle] = collections.OrderedDict()
        self._sizes: dict[tuple, int] = {}
        self._released: weakref.WeakValueDictionary[tuple, DatasetBundle] = weakref.WeakValueDictionary()
        self._key_locks: dict[tuple, threading.Lock] = {}
        self._shown: tuple | None = None

    # --- what is kept ---------------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes of the datasets kept now."""
        with self._lock:
            return sum(self._sizes.values())

    def keys(self) -> list[tuple]:
        """The keys kept, least recently used first."""
        with self._lock:
            return list(self._items)

    def __contains__(self, data_cfg) -> bool:
        with self._lock:
            return dataset_key(data_cfg) in self._items

    @property
    def shown(self) -> tuple | None:
        """The key of the dataset on screen (never evicted), None when none is marked."""
        return self._shown

    def set_shown(self, data_cfg) -> None:
        """Mark the dataset `data_cfg` names (None: none) as the one on screen: it is never evicted, and the
        others are trimmed to the budget at once, so a large dataset switched away from is released now."""
        with self._lock:
            self._shown = None if data_cfg is None else dataset_key(data_cfg)
            released = self._trim()
        if released:
            del released
            release_freed_memory()

    def _trim(self) -> list[DatasetBundle]:
        """Evict least recently used datasets (never the shown one) while over a bound; returns them (so the
        caller drops the last references outside the lock). Holds the lock."""
        out = []

        def over() -> bool:
            many = self.max_items is not None and len(self._items) > self.max_items
            return many or sum(self._sizes.values()) > self.max_bytes

        for key in list(self._items):
            if not over():
                break
            if key == self._shown:
                continue
            bundle = self._items.pop(key)
            self._sizes.pop(key, None)
            self._released[key] = bundle  # found again while anything else still holds it
            out.append(bundle)
        return out

    # --- loading --------------------------------------------------------------------------------------------
    def _lookup(self, k: tuple) -> DatasetBundle | None:
        """The kept (or released but still alive) dataset of key k, now the most recently used. Holds the lock."""
        bundle = self._items.get(k)
        if bundle is not None:
            self._items.move_to_end(k)
            return bundle
        bundle = self._released.get(k)
        if bundle is not None:  # released, but something still holds it: keep it again rather than load a copy
            self._items[k] = bundle
            self._sizes[k] = bundle_nbytes(bundle)
        return bundle

    def get(self, data_cfg) -> DatasetBundle:
        """The dataset `data_cfg` names with its modality selection, loaded once per key."""
        k = dataset_key(data_cfg)
        released: list[DatasetBundle] = []
        with self._lock:
            bundle = self._lookup(k)
            klock = self._key_locks.setdefault(k, threading.Lock())
        if bundle is None:
            with klock:  # one load per key at a time; a second caller waits for the first one's result
                with self._lock:
                    bundle = self._lookup(k)
                if bundle is None:
                    bundle = load_dataset(dataclasses.replace(data_cfg, modalities=()))
                    size = bundle_nbytes(bundle)
                    with self._lock:
                        self._items[k] = bundle
                        self._sizes[k] = size
                        released = self._trim()
        else:
            with self._lock:
                released = self._trim()
        selected = choose_modalities(bundle, data_cfg.modalities, data_cfg.dataset)
        if selected is not bundle:
            try:
                selected.source_bundle = bundle  # a selection keeps its whole dataset findable (see _released)
            except AttributeError:  # pragma: no cover - a bundle type without instance attributes
                pass
        if released:
            del released
            release_freed_memory()
        return selected

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._sizes.clear()
            self._released.clear()
        release_freed_memory()


__all__ = ["DEFAULT_MAX_BYTES", "DatasetCache", "bundle_nbytes", "dataset_key", "default_max_bytes",
           "parse_bytes", "physical_memory", "release_freed_memory"]
