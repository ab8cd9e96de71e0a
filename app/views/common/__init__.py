"""Widgets and helpers shared by the tabs: plot styling (`style`, `plot_util`), plot exports (`export`), the
progress / cancel / export controls of background jobs (`job_controls`), and synthetic data for running a panel
alone (`demo`)."""
