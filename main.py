"""Robult Studio launcher: `python main.py` opens the desktop app on the embedded default dataset."""
import sys

from app.main import main

if __name__ == "__main__":
    sys.exit(main())
