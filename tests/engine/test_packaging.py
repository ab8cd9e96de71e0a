"""The built wheel: the shipped assets (icon, licences, .desktop file) are package data, the dataset cache is not,
the LICENSE is in the metadata, and Qt is an extra (`gui`), not a dependency of the engine. Built offline from a
copy of the checkout (no build isolation: the setuptools of this environment)."""
from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    pytest.importorskip("setuptools", minversion="77")  # the test extra brings it (license = "MIT" needs 77)
    src = tmp_path_factory.mktemp("src") / "robult-studio"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout")
    for rel in files.stdout.splitlines():
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    (src / "assets" / "cache" / "wheels").mkdir(parents=True, exist_ok=True)
    (src / "assets" / "cache" / "av_digits.npz").write_bytes(b"a built cache must never ship")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(out)], cwd=src, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (path,) = out.glob("robult_studio-*.whl")
    return zipfile.ZipFile(path)


def test_assets_ship_as_package_data_and_the_cache_does_not(wheel):
    names = set(wheel.namelist())
    for rel in ("icons/robult-studio.svg", "AV-DIGITS-LICENSE.md", "MOVIES-LICENSE.md", "THIRD-PARTY-NOTICES.md",
                "robult-studio.desktop"):
        assert f"robult_engine/assets/{rel}" in names, rel
    assert not [n for n in names if "/cache/" in n or n.endswith(".npz") or n.endswith(".whl")]
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "examples/", "assets/"))]
    assert {"robult_engine/cli.py", "robult_engine/runlog.py", "robult_engine/paths.py", "app/main.py"} <= names
    desktop = wheel.read("robult_engine/assets/robult-studio.desktop").decode()
    assert "Exec=robult-studio" in desktop and "Icon=robult-studio" in desktop


def test_metadata_licence_version_and_optional_qt(wheel):
    import robult_engine
    meta_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    meta = email.message_from_bytes(wheel.read(meta_name))
    assert meta["Version"] == robult_engine.__version__
    assert meta["License-Expression"] == "MIT"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel.namelist())
    requires = meta.get_all("Requires-Dist")
    plain = [r for r in requires if "extra ==" not in r]
    assert not [r for r in plain if r.lower().startswith(("pyside6", "pyqtgraph", "sqlite-utils"))], plain
    assert any(r.startswith("PySide6-Essentials") and 'extra == "gui"' in r for r in requires)
    assert any(r.startswith("tensorboardX") and 'extra == "tensorboard"' in r for r in requires)
    assert {"gui", "tensorboard", "test"} <= set(meta.get_all("Provides-Extra"))


def test_ci_runs_the_readme_test_command_verbatim():
    import re
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^python3 -m venv \.venv && .*$", readme, flags=re.M)
    assert len(commands) >= 2, "the README opens with the set-up command and the test command"
    setup, test = commands[0], commands[1]
    assert "-e '.[gui]'" in setup and "torch==2.13.0" in setup and setup.endswith("main.py")
    assert "-e '.[gui,test]'" in test and "torch==2.13.0" in test and test.endswith("python -m pytest")
    assert test in (REPO / ".ci" / "run").read_text().splitlines()


def test_desktop_file_is_valid():
    tool = shutil.which("desktop-file-validate")  # Debian: apt-get install desktop-file-utils
    if tool is None:
        pytest.skip("desktop-file-validate is not installed")
    proc = subprocess.run([tool, str(REPO / "assets" / "robult-studio.desktop")], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
