"""Qt-free analysis behind the explorer and the analysis tabs: loading samples (`sources`), the current model's
context and inspection cache (`context`), robustness of every run (`robustness`), missing-rate curves
(`curves`), explanations (`explain`), the task's language (`task_language`), exported tables (`tables`), and a
model straight from a checkpoint (`standalone`). Nothing here imports Qt (tests/app/test_layout.py checks it).
"""
