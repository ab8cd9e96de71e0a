"""The analysis tabs, each a whole tab of the main window: Robustness (with its Missing-rate curves view),
Latent space, Calibration, Dataset PID and Slices. `tabs.AnalysisTabs` builds them and wires them to each other;
MainWindow builds it and wires it to the Explorer tab."""
