"""Everything that runs off the GUI thread, and the rules for it (see docs/app.md, "Background work")."""
