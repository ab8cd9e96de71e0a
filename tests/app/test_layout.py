"""One home for each thing: app/views/explorer holds only the Explorer tab, nothing imports from it a module that
lives elsewhere, app/core/analysis imports no Qt, and MainWindow builds every analysis tab itself."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXPLORER = REPO / "app" / "views" / "explorer"
EXPLORER_TAB = {"__init__.py", "explorer_panel.py", "sample_panel.py", "predictions_panel.py",
                "attribution_panel.py", "softpu_panel.py", "latents_panel.py", "toggles.py", "mechanism_control.py",
                "service.py"}
ANALYSIS_TABS = ("robustness", "curves", "latent_view", "calibration", "pid", "slices")


def _explorer_imports_of(path: Path) -> set[str]:
    """The app/views/explorer module files `path` imports (relative or absolute, function-level too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = path.relative_to(REPO).with_suffix("").parts
    here = ".".join(parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([mod] if mod else []))
            if mod == "app.views.explorer":
                found |= {f"{a.name}.py" for a in node.names}
            elif mod.startswith("app.views.explorer."):
                found.add(mod.split(".")[3] + ".py")
    return found


def test_the_explorer_folder_holds_only_the_explorer_tab():
    files = {p.name for p in EXPLORER.glob("*.py")}
    assert files == EXPLORER_TAB, sorted(files ^ EXPLORER_TAB)
    assert not [p for p in EXPLORER.iterdir() if p.is_dir() and p.name != "__pycache__"]


def test_every_explorer_import_names_an_explorer_tab_module():
    for path in [*(REPO / "app").rglob("*.py"), *(REPO / "tests").rglob("*.py"), *(REPO / "benchmarks").glob("*.py"),
                 REPO / "main.py"]:
        missing = _explorer_imports_of(path) - EXPLORER_TAB
        assert not missing, f"{path.relative_to(REPO)} imports {sorted(missing)} from app/views/explorer"


def test_the_analysis_core_imports_no_qt():
    code = ("import sys, pkgutil, importlib, app.core.analysis as a; "
            "names=[m.name for m in pkgutil.walk_packages(a.__path__, 'app.core.analysis.')]; "
            "assert len(names) >= 8, names; [importlib.import_module(n) for n in names]; "
            "bad=[m for m in sys.modules if m.split('.')[0] in ('PySide6','shiboken6','pyqtgraph')]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr


def test_main_window_builds_each_analysis_tab_by_attribute(qtbot, make_window):
    from app.views.analysis.tabs import AnalysisTabs
    from app.views.explorer.explorer_panel import ExplorerPanel
    source = (REPO / "app" / "main_window.py").read_text(encoding="utf-8")
    assert "install(" not in source.replace("gc_policy.install(", "") and "ExplorerSuite" not in source
    w = make_window(show=False)
    assert isinstance(w.explorer, ExplorerPanel) and isinstance(w.analysis, AnalysisTabs)
    tabs = [w.tabs.widget(i) for i in range(w.tabs.count())]
    assert w.explorer in tabs
    for name in ANALYSIS_TABS:
        widget = getattr(w.analysis, name)
        assert widget in tabs or widget is w.analysis.robustness.views.widget(1), name
