"""The engine's error types, in one module that imports nothing else of the engine.

Every module may raise them without importing the module that explains them; each is also importable from its
traditional home (`config.ConfigError`, `checkpoint.CheckpointError`, `checkpoint.UntrustedCodeError`,
`missing.MissingSpecError`). Every message names the field, flag or file and what is wrong with it.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the reason."""


class MissingSpecError(ConfigError):
    """A bad missing-modality spec or mask file; the message names the spec (or file) and the problem."""


class CheckpointError(ValueError):
    """The file is not a usable Robult checkpoint; the message names the file and the reason."""


class UntrustedCodeError(CheckpointError):
    """The checkpoint's config names encoder code outside robult_engine (`model.encoders`), and the caller did
    not trust it: nothing was imported. `.modules` lists the module names (for a dialog that names them),
    `.source` is the checkpoint file (or the config field) that names them."""

    def __init__(self, source: str, modules: list[str] | tuple[str, ...]) -> None:
        self.source = str(source)
        self.modules = list(modules)
        names = ", ".join(self.modules)
        super().__init__(
            f"{self.source}: uses encoder code from outside Robult Studio (model.encoders) that was not trusted: "
            f"module{'s' if len(self.modules) > 1 else ''} {names}. Loading it would import and run that code, "
            f"so nothing was imported. If you trust {names}, name {'them' if len(self.modules) > 1 else 'it'}: "
            f"--trust-code {','.join(self.modules)} (robult eval, robult train --resume) or "
            f"model_from_checkpoint(ckpt, trust_code={set(self.modules)!r}).")

    def __reduce__(self):  # picklable across processes despite the custom __init__
        return (type(self), (self.source, self.modules))


class DataError(ValueError):
    """Bad input data; the message names the file (and row) and what was expected."""


__all__ = ["CheckpointError", "ConfigError", "DataError", "MissingSpecError", "UntrustedCodeError"]
