"""The engine imports no Qt, no plotting, no SQLite and nothing from `app` (docs/app.md, "Layout"), checked in a fresh
interpreter: every module of the package is imported, then a tiny training run and an evaluation happen (so lazy
imports along the way count too)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

FORBIDDEN = ("PySide6", "shiboken6", "pyqtgraph", "sqlite3", "_sqlite3", "sqlite_utils", "app")

SCRIPT = textwrap.dedent("""
    import json, pkgutil, importlib, sys
    import robult_engine
    mods = sorted(m.name for m in pkgutil.walk_packages(robult_engine.__path__, "robult_engine.")
                  if not m.name.endswith("__main__"))
    for name in mods:
        importlib.import_module(name)
    from robult_engine import cli, evaluation, trainer  # the ones the brief names, explicitly
    from robult_engine.config import RunConfig
    from robult_engine.evaluation import evaluate_subsets
    cfg = RunConfig().replace(**{"data.dataset": "pid-synth", "data.synth_n_train": 40, "model.d_h": 8,
                                 "model.d_z": 4, "model.d_u": 4, "model.d_hidden": 8, "train.epochs": 1,
                                 "train.batch_size": 8, "train.labeled_per_batch": 2})
    t = trainer.Trainer(cfg)
    final = t.run()
    assert type(final).__name__ == "Finished", final
    evaluate_subsets(t.model, t.bundle.splits["val"], t.bundle.info.modality_names, t.bundle.info.task)
    top = sorted({m.split(".")[0] for m in sys.modules})
    print(json.dumps({"modules": mods, "top": top}))
""")


def test_engine_imports_no_gui_plotting_sqlite_or_app():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"robult_engine.trainer", "robult_engine.cli", "robult_engine.evaluation",
            "robult_engine.models.robult", "robult_engine.data.pid_synth"} <= set(report["modules"])
    loaded = [m for m in FORBIDDEN if m in report["top"]]
    assert not loaded, f"robult_engine pulled in {loaded}"


def test_engine_sources_do_not_name_the_app():
    """A static companion that sees every import the run above may not reach: each module's source is parsed
    (nothing is imported) and no import anywhere in it, module-level, inside a function or an optional
    `try`/`if` block, names Qt, pyqtgraph, SQLite or the app."""
    import ast
    from pathlib import Path

    import robult_engine
    root = Path(robult_engine.__file__).parent
    forbidden = set(FORBIDDEN) | {"PyQt5", "PyQt6", "PySide2"}
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.relative_to(root)}:{node.lineno}: imports {name}" for name in names
                          if name.split(".")[0] in forbidden]
    assert not offenders, offenders


def test_loader_helpers_import_no_loader_and_no_format_dispatch():
    """The helpers the dataset loaders share (data/loading.py) import neither a loader nor the format dispatch
    (formats.py, which imports the loaders): no import circle between them."""
    script = ("import sys, robult_engine.data.loading as l; "
              "print(sorted(m for m in sys.modules if m.startswith('robult_engine.data.')))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = set(eval(proc.stdout.strip()))  # a printed list of module names
    assert "robult_engine.data.loading" in loaded
    for name in ("formats", "manifest", "mosi", "mmimdb", "food101", "hateful_memes"):
        assert f"robult_engine.data.{name}" not in loaded, name
