"""The app's CSV exports (every panel writes through `app.core.analysis.tables.write_csv`): text cells a
spreadsheet would run as formulas get a leading ', numbers stay numbers."""
from __future__ import annotations

import csv

import numpy as np

from app.core.sweeps import SweepResult
from app.core.analysis.tables import write_csv

LINK = '=HYPERLINK("http://x")'


def test_text_cells_are_neutralised_and_numbers_kept(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["run", "modality", "value", "delta"],
                     [[LINK, "@audio", 0.5, -0.0312], ["-cmd", "\timage", np.float32(-1.5), np.int64(-3)],
                      ["+1", "text", -3.12e-05, "-0.031200"], ["robult (seed 0)", "m0+m1", float("nan"), [-0.1, 0.2]]])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["run", "modality", "value", "delta"]
    assert rows[1] == ["'" + LINK, "'@audio", "0.5", "-0.0312"]
    assert rows[2] == ["'-cmd", "'\timage", "-1.5", "-3"]
    assert rows[3] == ["+1", "text", "-3.12e-05", "-0.031200"]
    assert rows[4] == ["robult (seed 0)", "m0+m1", "", "'-0.1 0.2"]


def test_the_sweep_export_neutralises_a_mask_setting_and_keeps_negative_differences(tmp_path):
    res = SweepResult(id=1, name="s", status="finished", source="cli", dataset="d", metric="accuracy",
                      methods=["robult", "supervised"], label_fractions=[0.1], missing=["@setting"], seeds=1,
                      mask_seed=0, rates={"@setting": float("nan")}, realised={"@setting": 0.5}, runs_total=2,
                      runs_done=2, cells={(0.1, "@setting", "robult"): {0: 0.5},
                                          (0.1, "@setting", "supervised"): {0: 0.5312}})
    path = write_csv(tmp_path / "s.csv", res.csv_header(), res.csv_rows())
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["missing"] for r in rows] == ["'@setting", "'@setting"]
    assert rows[1]["diff_vs_first_mean"] == "-0.031200"


def test_exported_files_get_the_mode_of_any_new_file_and_dialogs_start_outside_the_working_directory(
        tmp_path, monkeypatch, qtbot):
    """Exports used to be written 0600 (the temporary file's private mode survived the rename), and the export
    dialogs opened in the current directory (a source checkout)."""
    import os
    from pathlib import Path

    from PySide6.QtWidgets import QFileDialog, QWidget

    from app.views.common import job_controls
    from app.core.analysis.tables import write_csv
    old = os.umask(0o022)
    try:
        path = write_csv(tmp_path / "t.csv", ["a"], [["x"]])
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644
    seen = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        lambda parent, title, start="": seen.append(start) or str(tmp_path))
    monkeypatch.setattr(job_controls, "_last_export_dir", [])
    monkeypatch.chdir(tmp_path / "..")
    w = QWidget()
    qtbot.addWidget(w)
    assert job_controls.choose_export_folder(w, "Export") == str(tmp_path)
    assert seen[0] and Path(seen[0]).resolve() != Path.cwd().resolve()  # Documents or home, not the cwd
    job_controls.choose_export_folder(w, "Export")
    assert seen[1] == str(tmp_path)  # the next export starts where the last one went
