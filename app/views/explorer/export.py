"""Moved: plots to app.views.common.export, tables to app.core.analysis.tables. Kept only while
app/views/explorer/pid_panel.py or app/views/sweeps.py still import from here; tests/app/test_layout.py fails
once neither does, and this file goes."""
from app.core.analysis.tables import safe_name, write_csv
from app.views.common.export import export_plot

__all__ = ["export_plot", "safe_name", "write_csv"]
