"""The text form of missing-modality settings: `MissingSpec` and its parser (`parse_missing`, `parse_missing_grid`).

Pure text handling (no torch, no data), so the configuration can validate `data.train_missing` with it; the
syntax, the mechanisms and the masks they draw are described in robult_engine/missing.py, which re-exports
everything here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import MissingSpecError



@dataclass(frozen=True)
class Mechanism:
    """What one missing-modality mechanism is, for the parser and for every list of mechanisms shown to a user."""
    name: str
    summary: str  # one line on what it removes
    rated: bool  # takes rates (``name:η``)
    curve: bool  # one nominal rate η per setting: a metric-against-η curve can be drawn over it
    per_sample: bool  # a mask can be drawn for one sample and applied to it
    needs_split: bool  # the mask of a sample depends on the whole split (feature strengths, labels)


_REGISTRY = (
    Mechanism("mcar", "MCAR: every entry missing independently with probability η", True, True, True, False),
    Mechanism("mnar-class", "MNAR by class: entries of the chosen classes (default: the first half) missing with "
              "probability η, the others with the second rate (default 0)", True, True, True, True),
    Mechanism("mnar-value", "MNAR by value: for each modality, the fraction η of samples with the weakest signal "
              "(lowest feature RMS; for text, fewest tokens) lose it", True, True, True, True),
    Mechanism("exclusive", "exactly one modality per sample, chosen uniformly among those it has", False, False,
              True, False),
    Mechanism("subsets", "every non-empty modality subset, one setting each", False, False, False, False),
    Mechanism("subset", "one modality subset kept (subset:a+b)", False, False, False, False),
)

MECHANISMS = tuple(m.name for m in _REGISTRY)


def describe_mechanisms(*, curve: bool | None = None, per_sample: bool | None = None) -> tuple[Mechanism, ...]:
    """The registered mechanisms, in registry order; `curve` / `per_sample` keep those with that property."""
    return tuple(m for m in _REGISTRY
                 if (curve is None or m.curve == curve) and (per_sample is None or m.per_sample == per_sample))


def mechanism_names(*, curve: bool | None = None, per_sample: bool | None = None) -> tuple[str, ...]:
    """The names of `describe_mechanisms(...)`."""
    return tuple(m.name for m in describe_mechanisms(curve=curve, per_sample=per_sample))


def mechanism(name: str) -> Mechanism:
    """The registered mechanism called `name` (KeyError if there is none)."""
    for m in _REGISTRY:
        if m.name == name:
            return m
    raise KeyError(name)


@dataclass(frozen=True)
class MissingSpec:
    """One setting of a missing-modality mechanism (the syntax and the mechanisms: robult_engine/missing.py)."""
    mechanism: str
    # mcar / mnar-value: one rate, or one per modality; mnar-class: (η_hi,) or (η_hi, η_lo). Fractions MISSING.
    rates: tuple[float, ...] = ()
    # mcar / mnar-value with named rates: the modality of each rate; subset: the modalities kept
    modalities: tuple[str, ...] = ()
    # mnar-class: the classes that go missing at η_hi (indices or names, as written); empty: the default set
    classes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The canonical spec text; `parse_missing(spec.label) == [spec]`."""
        if self.mechanism in ("exclusive", "subsets"):
            return self.mechanism
        if self.mechanism == "subset":
            return "subset:" + "+".join(self.modalities)
        if self.modalities:
            body = "/".join(f"{n}={_fmt(r)}" for n, r in zip(self.modalities, self.rates))
        else:
            body = "/".join(_fmt(r) for r in self.rates)
        cls = "@" + "+".join(self.classes) if self.classes else ""
        return f"{self.mechanism}:{body}{cls}"

    @property
    def rate(self) -> float:
        """The nominal rate η of a one-rate setting (mcar, mnar-value), η_hi for mnar-class, NaN otherwise
        (per-modality rates, exclusive, subsets): the x axis of a curve."""
        if self.mechanism in ("mcar", "mnar-value") and len(self.rates) == 1 and not self.modalities:
            return self.rates[0]
        if self.mechanism == "mnar-class" and self.rates:
            return self.rates[0]
        return float("nan")


def _fmt(x: float) -> str:
    """A rate as spec labels show it: `:g` (0.25) where that gives the rate back, else the shortest text that
    does (0.9999999 is not 1, which is no rate at all)."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def _rate(text: str, spec: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise MissingSpecError(f"{where} {spec}: {text.strip()!r} is not a rate (a number in [0, 1), the "
                               f"fraction of entries missing)") from None
    if not (0.0 <= v < 1.0) or math.isnan(v):
        raise MissingSpecError(f"{where} {spec}: a rate must be in [0, 1) (the fraction of entries missing), "
                               f"got {text.strip()}")
    return v


def parse_missing(text: str, where: str = "--missing") -> list[MissingSpec]:
    """One spec text → its settings (one, or several for a grid like ``mcar:0,0.25,0.5``). `subsets` stays one
    spec here (it needs the modality names; `expand` turns it into the 2^M − 1 subsets)."""
    spec = str(text).strip()
    mech, colon, rest = spec.partition(":")
    mech = mech.strip().lower()
    rest = rest.strip()
    if mech not in MECHANISMS:
        raise MissingSpecError(f"{where} {spec}: unknown mechanism {mech!r}; one of {', '.join(MECHANISMS)} "
                               f"(e.g. mcar:0.5, the fraction of entries missing)")
    if mech in ("exclusive", "subsets"):
        if rest:
            raise MissingSpecError(f"{where} {spec}: {mech} takes no parameters")
        return [MissingSpec(mech)]
    if not rest:
        hint = "subset:audio+image" if mech == "subset" else f"{mech}:0.5 (the fraction of entries missing)"
        raise MissingSpecError(f"{where} {spec}: {mech} needs parameters, e.g. {hint}")
    if mech == "subset":
        names = tuple(n.strip() for n in rest.split("+"))
        if not all(names) or len(set(names)) != len(names):
            raise MissingSpecError(f"{where} {spec}: name each kept modality once, joined by '+'")
        return [MissingSpec("subset", modalities=names)]
    classes: tuple[str, ...] = ()
    if "@" in rest:
        if mech != "mnar-class":
            raise MissingSpecError(f"{where} {spec}: only mnar-class takes '@CLASSES'")
        rest, _, cls = rest.partition("@")
        classes = tuple(c.strip() for c in cls.split("+"))
        if not all(classes) or len(set(classes)) != len(classes):
            raise MissingSpecError(f"{where} {spec}: name each class once after '@', joined by '+' (e.g. @3+5)")
    out = []
    for item in rest.split(","):
        parts = [p.strip() for p in item.split("/")]
        if not all(parts):
            raise MissingSpecError(f"{where} {spec}: an empty rate in {item.strip()!r}")
        names, rates = [], []
        for p in parts:
            if "=" in p:
                n, v = p.split("=", 1)
                names.append(n.strip())
            else:
                v = p
            rates.append(_rate(v, spec, where))
        if names and len(names) != len(parts):
            raise MissingSpecError(f"{where} {spec}: name every rate of a setting or none ({item.strip()!r})")
        if len(set(names)) != len(names):
            raise MissingSpecError(f"{where} {spec}: a modality is named twice in {item.strip()!r}")
        if mech == "mnar-class" and (names or len(rates) > 2):
            raise MissingSpecError(f"{where} {spec}: mnar-class takes HI or HI/LO (the rate for the chosen classes "
                                   f"and for the others), got {item.strip()!r}")
        out.append(MissingSpec(mech, tuple(rates), tuple(names), classes))
    return out


def parse_missing_grid(items: list[str] | tuple[str, ...] | str, where: str = "--missing") -> list[MissingSpec]:
    """Several spec texts (a repeated option) → all their settings in order, without repeats."""
    if isinstance(items, str):
        items = [items]
    out: list[MissingSpec] = []
    for item in items:
        for s in parse_missing(item, where):
            if s not in out:
                out.append(s)
    return out


__all__ = ["MECHANISMS", "Mechanism", "MissingSpec", "MissingSpecError", "describe_mechanisms", "mechanism", "mechanism_names", "parse_missing",
           "parse_missing_grid"]
