"""Qt-free state of the explorer (model and view apart): the model context, which sample, which
modalities, and which generation of the request the panels are waiting for.

Every change of the context, the sample or the toggles bumps `generation`; a result that comes back with an
older generation is stale and is dropped, so rapid toggling always ends on the last state. Listeners are
called on the thread that changes the state (the GUI thread) with the set of changed keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

STATE_VERSION = 1  # of the dict stored with a session's inspection

Listener = Callable[[set[str]], None]


@dataclass(frozen=True)
class SampleRef:
    """Where the sample on screen comes from: a dataset split + index, or the user's own files / text.

    `files` and `texts` are (modality name, path or typed text) pairs, sorted by modality name.
    """
    kind: str  # "dataset" | "files"
    split: str = ""
    index: int = -1
    files: tuple[tuple[str, str], ...] = ()
    texts: tuple[tuple[str, str], ...] = ()

    @classmethod
    def dataset(cls, split: str, index: int) -> "SampleRef":
        return cls("dataset", split=str(split), index=int(index))

    @classmethod
    def sources(cls, files: dict[str, str] | None = None, texts: dict[str, str] | None = None) -> "SampleRef":
        return cls("files", files=tuple(sorted((files or {}).items())), texts=tuple(sorted((texts or {}).items())))

    @property
    def is_dataset(self) -> bool:
        return self.kind == "dataset"

    def key(self) -> tuple:
        """Hashable identity (the encoding cache's key)."""
        return (self.kind, self.split, self.index, self.files, self.texts)

    def label(self) -> str:
        if self.is_dataset:
            return f"{self.split} #{self.index}"
        parts = [f"{m}: {p.rsplit('/', 1)[-1]}" for m, p in self.files]
        parts += [f"{m}: “{t[:24]}{'…' if len(t) > 24 else ''}”" for m, t in self.texts]
        return ", ".join(parts) or "(no input)"

    def to_dict(self) -> dict[str, Any]:
        if self.is_dataset:
            return {"kind": "dataset", "split": self.split, "index": self.index}
        return {"kind": "files", "files": dict(self.files), "texts": dict(self.texts)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SampleRef":
        if d.get("kind") == "dataset":
            return cls.dataset(str(d["split"]), int(d["index"]))
        if d.get("kind") == "files":
            return cls.sources({str(k): str(v) for k, v in (d.get("files") or {}).items()},
                               {str(k): str(v) for k, v in (d.get("texts") or {}).items()})
        raise ValueError(f"unknown sample reference {d!r}")


@dataclass
class ExplorerState:
    """The one source of truth of the explorer (GUI thread only): the model context, its modalities, the
    sample, the toggles, which of the sample's modalities are present, and the request generation.

    Toggles and panels subscribe and render; they change it only through the methods below when the *user*
    asks for something (a click, a new sample), never to echo what they were told. Changing the context,
    the modalities, the sample or the toggles bumps `generation` (the one counter stale answers are checked
    against); `present` and a restored sample do not (nothing needs recomputing)."""
    modality_names: tuple[str, ...] = ()
    sample: SampleRef | None = None
    enabled: tuple[bool, ...] = ()
    present: tuple[bool, ...] | None = None  # of the sample on screen; None until one is shown
    context: Any = None  # app.core.analysis.context.ModelContext of the current model, None while preparing
    generation: int = 0
    _listeners: list[Listener] = field(default_factory=list, repr=False)

    REQUEST_KEYS = frozenset({"modalities", "enabled", "sample", "context"})

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _notify(self, changed: set[str]) -> None:
        if changed & self.REQUEST_KEYS:
            self.generation += 1
            changed = changed | {"generation"}
        for listener in list(self._listeners):
            listener(changed)

    def set_modalities(self, names: tuple[str, ...] | list[str]) -> None:
        """A new model: its modalities, all switched on, no context (it is prepared in the background) and no
        sample yet (the panel picks one once the context is ready)."""
        names = tuple(names)
        changed = {"enabled", "context", "sample", "present"} | ({"modalities"} if names != self.modality_names
                                                                 else set())
        self.modality_names = names
        self.enabled = (True,) * len(names)
        self.present = None
        self.context = None
        self.sample = None
        self._notify(changed)

    def set_context(self, context: Any) -> None:
        self.context = context
        self._notify({"context"})

    def set_sample(self, ref: SampleRef | None, enabled: tuple[bool, ...] | None = None) -> None:
        """Show another sample, optionally with its toggles (one change, one generation)."""
        changed = {"sample"}
        self.sample = ref
        if enabled is not None and len(enabled) == len(self.modality_names):
            enabled = tuple(bool(e) for e in enabled)
            if enabled != self.enabled:
                self.enabled = enabled
                changed.add("enabled")
        self._notify(changed)

    def set_enabled(self, enabled: tuple[bool, ...] | list[bool]) -> None:
        enabled = tuple(bool(x) for x in enabled)
        if len(enabled) != len(self.modality_names):
            raise ValueError(f"{len(enabled)} toggles for {len(self.modality_names)} modalities")
        if enabled != self.enabled:
            self.enabled = enabled
            self._notify({"enabled"})

    def set_present(self, present: tuple[bool, ...] | None) -> None:
        """Which modalities the sample on screen has (its answer came back)."""
        present = tuple(bool(p) for p in present) if present is not None else None
        if present != self.present:
            self.present = present
            self._notify({"present"})

    def restore_sample(self, ref: SampleRef | None) -> None:
        """A requested sample could not be used: the previous one (still on screen) is the state again. No
        generation: nothing is recomputed."""
        self.sample = ref
        self._notify({"sample_restored"})

    def refresh(self) -> None:
        """Ask again for the same state (e.g. another model should answer it): a new generation."""
        self._notify({"sample"})

    def is_current(self, generation: int) -> bool:
        return generation == self.generation

    # --- sessions ---------------------------------------------------------------------------------------
    def to_dict(self, prediction: dict | None = None) -> dict[str, Any]:
        """What a session stores: the sample, the toggles (by modality name) and the prediction shown."""
        return {
            "version": STATE_VERSION,
            "sample": self.sample.to_dict() if self.sample is not None else None,
            "enabled": dict(zip(self.modality_names, self.enabled)),
            "prediction": prediction,
        }

    @staticmethod
    def parse(d: dict[str, Any] | None, modality_names: tuple[str, ...]
              ) -> tuple[SampleRef | None, tuple[bool, ...]]:
        """(sample, enabled) from a stored dict; unknown or missing modalities default to on. Never raises:
        a damaged record gives (None, all on)."""
        all_on = (True,) * len(modality_names)
        if not isinstance(d, dict):
            return None, all_on
        try:
            ref = SampleRef.from_dict(d["sample"]) if d.get("sample") else None
        except (KeyError, TypeError, ValueError):
            ref = None
        en = d.get("enabled") if isinstance(d.get("enabled"), dict) else {}
        return ref, tuple(bool(en.get(n, True)) for n in modality_names)
