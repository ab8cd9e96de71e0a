"""Packaging that pyproject.toml cannot express: the shipped assets (assets/ in the checkout) become the package
data `robult_engine/assets/` in a wheel, so an installed Robult Studio has its icon, licences and .desktop file
(`robult_engine.paths.asset_path` finds them in a checkout and in a wheel alike). The dataset cache
(assets/cache/) is never packaged. Everything else is in pyproject.toml."""
from setuptools import find_namespace_packages, setup

setup(
    # namespace packages included, as pyproject's own `packages.find` does; caches of compiled files are not packages
    packages=find_namespace_packages(include=["robult_engine", "robult_engine.*", "app", "app.*"],
                                     exclude=["*.__pycache__"]) + ["robult_engine.assets"],
    package_dir={"robult_engine.assets": "assets"},
    package_data={"robult_engine.assets": ["*.md", "*.desktop", "icons/*.svg"]},
)
