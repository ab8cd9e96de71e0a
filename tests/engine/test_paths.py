"""Where caches and shipped assets live: a source checkout, an installed wheel, $ROBULT_CACHE_DIR; the version."""
from __future__ import annotations

import tomllib
from pathlib import Path

import robult_engine
from robult_engine import paths
from robult_engine.data import avdigits

REPO = Path(__file__).resolve().parents[2]


def test_source_checkout_keeps_assets_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("ROBULT_CACHE_DIR", raising=False)
    repo = tmp_path / "repo"
    (repo / "robult_engine").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\nname = 'robult-studio'\n")
    monkeypatch.setattr(paths, "PACKAGE_DIR", repo / "robult_engine")
    assert paths.source_checkout() == repo
    assert paths.cache_dir() == repo / "assets" / "cache"
    assert avdigits.cache_dir() == repo / "assets" / "cache"  # the dataset module asks the shared function


def test_installed_package_uses_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("ROBULT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # platformdirs' Linux cache root
    site = tmp_path / "lib" / "site-packages"
    (site / "robult_engine").mkdir(parents=True)
    monkeypatch.setattr(paths, "PACKAGE_DIR", site / "robult_engine")
    assert paths.source_checkout() is None
    assert paths.cache_dir() == tmp_path / "xdg" / "RobultStudio"
    assert site not in paths.cache_dir().parents  # never inside site-packages


def test_env_overrides_both(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBULT_CACHE_DIR", str(tmp_path / "mine"))
    assert paths.cache_dir() == tmp_path / "mine"
    monkeypatch.setattr(paths, "PACKAGE_DIR", tmp_path / "site-packages" / "robult_engine")
    assert avdigits.cache_dir() == tmp_path / "mine"


def test_assets_resolve_in_this_checkout():
    for rel in ("icons/robult-studio.svg", "AV-DIGITS-LICENSE.md", "MFEAT-LICENSE.md", "THIRD-PARTY-NOTICES.md",
                "robult-studio.desktop"):
        assert paths.asset_path(rel).is_file(), rel


def test_assets_inside_an_installed_package_win(monkeypatch, tmp_path):
    pkg = tmp_path / "site-packages" / "robult_engine"
    (pkg / "assets" / "icons").mkdir(parents=True)
    (pkg / "assets" / "icons" / "robult-studio.svg").write_text("<svg/>")
    monkeypatch.setattr(paths, "PACKAGE_DIR", pkg)
    assert paths.asset_path("icons/robult-studio.svg") == pkg / "assets" / "icons" / "robult-studio.svg"


def test_version_is_the_pyproject_version():
    want = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert robult_engine.__version__ == want


def test_robult_version_flag(engine_cli):
    proc = engine_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"robult {robult_engine.__version__}"
