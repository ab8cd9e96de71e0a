"""Moved to app.core.analysis.explain. Kept only while app/views/explorer/pid_panel.py or app/views/sweeps.py still import it from
here; tests/app/test_layout.py fails once neither does, and this file goes."""
import sys

import app.core.analysis.explain as _moved

sys.modules[__name__] = _moved
