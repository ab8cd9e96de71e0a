"""Examples that plug into Robult Studio (importable from a source checkout: `PYTHONPATH=.`)."""
