"""The Qt-free core of the app: state objects the views subscribe to, the session store, the run session and
the background-work contract. Nothing here imports Qt (tests/app/test_main_window.py checks it)."""
