"""Fixtures of the engine tests: tiny configs, a tiny PID-Synth, and a synthetic dataset with all four modality
kinds. Nothing here imports Qt (tests/engine never does)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robult_engine.config import RunConfig
from robult_engine.data import DatasetBundle, DatasetInfo, ModalitySpec, SplitData, load_dataset

REPO = Path(__file__).resolve().parents[2]

@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Engine tests run their tiny models on one intra-op thread, restored afterwards (so the app tests of the same
    session keep theirs). On a 2-core machine shared with other processes, two OpenMP threads spin at every
    barrier while the other core is busy: the trainer tests measured 28 s with 2 threads and 9 s with 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Small enough that one epoch on PID-Synth takes well under a second on 2 cores.
TINY = {
    "data.dataset": "pid-synth",
    "data.synth_n_train": 120,
    "data.label_fraction": 0.1,
    "model.d_h": 16,
    "model.d_z": 8,
    "model.d_u": 8,
    "model.d_hidden": 16,
    "train.epochs": 2,
    "train.batch_size": 16,
    "train.labeled_per_batch": 4,
    "train.patience": 0,
}


def tiny_config(**changes) -> RunConfig:
    """A validated tiny RunConfig on PID-Synth; `changes` use dotted names (`**{"train.epochs": 1}`)."""
    return RunConfig().replace(**{**TINY, **changes}).validate()


@pytest.fixture
def tiny_cfg() -> RunConfig:
    return tiny_config()


@pytest.fixture
def make_cfg():
    """The `tiny_config` factory, for tests that need variants."""
    return tiny_config


@pytest.fixture(scope="session")
def pid_bundle() -> DatasetBundle:
    """The tiny PID-Synth of `tiny_config()` (120 / 32 / 64 samples, 8 classes, 3 vector modalities)."""
    return load_dataset(tiny_config().data)


def make_four_kind_bundle(n: int = 24, task: str = "single-label", num_classes: int = 3, seed: int = 0,
                          missing: float = 0.0) -> DatasetBundle:
    """A synthetic dataset with one modality of every kind: vector (5,), image (1, 8, 8), sequence (6, 4) with
    variable lengths, and text (7,) hashed ids (0 = padding) with lengths. `missing` drops each modality of a
    val/test sample with that probability (train keeps all modalities, the paper's protocol); a dropped one is
    zeroed with length 1, as the data interface prescribes."""
    g = torch.Generator().manual_seed(seed)
    info = DatasetInfo(
        name="four-kinds",
        modalities=(ModalitySpec("vec", "vector", (5,)), ModalitySpec("img", "image", (1, 8, 8)),
                    ModalitySpec("seq", "sequence", (6, 4)), ModalitySpec("txt", "text", (7,))),
        task=task,
        class_names=("score",) if task == "regression" else tuple(f"c{i}" for i in range(num_classes)),
    )

    def split(k: int, drop: float) -> SplitData:
        if task == "single-label":
            target = torch.arange(k) % num_classes
        elif task == "multi-label":
            target = (torch.rand(k, num_classes, generator=g) > 0.5).float()
        else:
            target = torch.randn(k, generator=g)
        seq_len = torch.randint(1, 7, (k,), generator=g)
        txt_len = torch.randint(1, 8, (k,), generator=g)
        seq = torch.randn(k, 6, 4, generator=g) * (torch.arange(6)[None, :, None] < seq_len[:, None, None])
        txt = torch.randint(1, 64, (k, 7), generator=g) * (torch.arange(7)[None, :] < txt_len[:, None])
        inputs = {"vec": torch.randn(k, 5, generator=g), "img": torch.rand(k, 1, 8, 8, generator=g),
                  "seq": seq, "txt": txt}
        mask = torch.ones(k, 4, dtype=torch.bool)
        if drop > 0:
            mask = torch.rand(k, 4, generator=g) >= drop
            empty = ~mask.any(1)
            mask[empty, torch.randint(0, 4, (int(empty.sum()),), generator=g)] = True
        lengths = {"seq": torch.where(mask[:, 2], seq_len, 1), "txt": torch.where(mask[:, 3], txt_len, 1)}
        for i, name in enumerate(("vec", "img", "seq", "txt")):
            shape = (-1,) + (1,) * (inputs[name].dim() - 1)
            inputs[name] = inputs[name] * mask[:, i].view(shape).to(inputs[name].dtype)
        return SplitData(inputs=inputs, lengths=lengths, mask=mask, target=target,
                         ids=[f"s{j}" for j in range(k)])

    return DatasetBundle(info, {"train": split(n, 0.0), "val": split(max(8, n // 2), missing),
                                "test": split(max(8, n // 2), missing)})


@pytest.fixture
def four_kind_bundle() -> DatasetBundle:
    return make_four_kind_bundle()


@pytest.fixture
def make_bundle():
    """The `make_four_kind_bundle` factory."""
    return make_four_kind_bundle


def run_engine(*args: str, timeout: float = 120, env: dict | None = None, cwd: str | Path | None = None
               ) -> subprocess.CompletedProcess:
    """`python -m robult_engine ARGS` in a subprocess (text output captured)."""
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "robult_engine", *args], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=cwd or REPO)


@pytest.fixture(scope="session")
def engine_cli():
    """The `run_engine` helper: `engine_cli("train", "--epochs", "1", ...)`."""
    return run_engine
