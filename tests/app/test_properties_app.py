"""A sweep.json opened in the app (`SweepStore.import_sweep_json`): for arbitrary content it is stored (and reads
back as a sweep the Sweeps tab can draw and export) or refused with a SweepFileError naming the file — never
another exception, and nothing is stored for a refused file."""
from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.core.sweeps import SweepFileError, SweepStore


def valid_sweep(seeds: int = 2) -> dict:
    """The fields of a sweep.json as `robult sweep` writes it (two methods, two fractions, two settings)."""
    def run(seed: int, base: float) -> dict:
        return {"seed": seed, "val_score": base, "best_epoch": 3,
                "missing": {"mcar:0": {"accuracy": base}, "mcar:0.5": {"accuracy": base - 0.1}}}
    return {"dataset": "pid-synth", "metric": "accuracy", "methods": ["robult", "supervised"],
            "label_fractions": [0.05, 0.5], "seeds": seeds, "missing": ["mcar:0", "mcar:0.5"], "mask_seed": 0,
            "masks_file": "masks.npz", "realised_missing": {"mcar:0": 0.0, "mcar:0.5": 0.45},
            "rates": {"mcar:0": 0.0, "mcar:0.5": 0.5}, "config": {"method": "robult"}, "elapsed_s": 12.5,
            "runs": {lf: {m: [run(s, 0.8 - 0.1 * s) for s in range(seeds)] for m in ("robult", "supervised")}
                     for lf in ("0.05", "0.5")}}


def write(folder, content) -> object:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweep.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8",
                    errors="surrogatepass")
    return path


def with_changes(changes: dict, run_changes: dict | None = None) -> dict:
    d = valid_sweep()
    d.update(changes)
    if run_changes:
        d["runs"]["0.05"]["robult"][0].update(run_changes)
    return d


@pytest.mark.parametrize("doc, message", [
    (with_changes({"mask_seed": 10 ** 30}), r"mask_seed must be an integer in 0\.\.4294967295, got 1000000000000"),
    (with_changes({"mask_seed": "abc"}), r"mask_seed must be an integer in 0\.\.4294967295, got 'abc'"),
    (with_changes({"mask_seed": -1}), r"mask_seed must be an integer in 0\.\.4294967295, got -1"),
    (with_changes({"seeds": 10 ** 30}), r"seeds must be an integer in 1\.\.1000, got 1000000000000"),
    (with_changes({"seeds": 2.0}), r"seeds must be an integer in 1\.\.1000, got 2\.0"),
    (with_changes({}, {"seed": 10 ** 30}), r"runs\[0\.05\]\[robult\] seed must be one of the sweep's seeds 0\.\.1"),
    (with_changes({}, {"best_epoch": 1e300}), r"best_epoch must be an integer in -1\.\.2147483647, got 1e\+300"),
    (with_changes({}, {"val_score": "good"}), r"val_score must be a number, got 'good'"),
    (with_changes({}, {"missing": ["mcar:0"]}), r"seed 0 missing must be an object of results by mask setting"),
    (with_changes({}, {"missing": {"mcar:0": {"accuracy": "high"}, "mcar:0.5": {"accuracy": 1}}}),
     r"seed 0 accuracy under mcar:0 must be a number, got 'high'"),
    (with_changes({"rates": {"mcar:0": "x"}}), r"rates must be an object of numbers by mask setting"),
    (with_changes({"rates": {"mcar:0": 10 ** 400}}), r"rates must be an object of numbers by mask setting"),
    (with_changes({"realised_missing": {"mcar:0": None}}), r"realised_missing must be an object of numbers"),
    (with_changes({"elapsed_s": "long"}), r"elapsed_s must be a number of seconds, got 'long'"),
    (with_changes({"label_fractions": [0.05, float("nan")]}), r"label_fractions must be a non-empty list of numbers"),
    (with_changes({"methods": "robult"}), r"methods must be a non-empty list of distinct names, got 'robult'"),
    (with_changes({"dataset": ["x"]}), r"dataset must be a dataset name"),
    (with_changes({"config": [1]}), r"config must be an object"),
    ('{"dataset": ' + "[" * 100_000 + "]" * 100_000 + "}", r"nested too deeply"),
])
def test_a_sweep_file_with_bad_values_is_refused_naming_the_file(store, tmp_path, doc, message):
    path = write(tmp_path / "cli", doc)
    with pytest.raises(SweepFileError, match=r"sweep\.json: .*" + message):
        SweepStore(store).import_sweep_json(path)
    assert SweepStore(store).list() == []


def test_the_valid_sweep_of_these_tests_imports(store, tmp_path):
    assert issubclass(SweepFileError, ValueError)
    sweeps = SweepStore(store)
    res = sweeps.get(sweeps.import_sweep_json(write(tmp_path / "cli", valid_sweep())))
    assert res.runs_done == res.runs_total == 8 and res.cell(0.05, "mcar:0", "robult")[0] == pytest.approx(0.75)


# --- the property ---------------------------------------------------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
                    st.sampled_from([0, 1, -1, 2 ** 31, 2 ** 32, 10 ** 30, 10 ** 400, 1e300, float("nan"),
                                     float("inf"), "mcar:0", "robult", "accuracy", "0.05"]))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=8)
TOP_FIELDS = ["dataset", "metric", "methods", "label_fractions", "seeds", "missing", "mask_seed", "rates",
              "realised_missing", "config", "elapsed_s", "runs"]
RUN_FIELDS = ["seed", "val_score", "best_epoch", "missing"]


@st.composite
def sweep_texts(draw) -> str:
    """Mostly a valid sweep.json with a few fields (or a run's fields) replaced or removed; now and then
    arbitrary JSON or text."""
    kind = draw(st.integers(0, 9))
    if kind == 9:
        return draw(st.one_of(st.text(max_size=40), JSON_VALUES.map(json.dumps)))
    d = valid_sweep(draw(st.integers(1, 3)))
    for key in draw(st.lists(st.sampled_from(TOP_FIELDS), max_size=2, unique=True)):
        if draw(st.integers(0, 4)) == 0:
            d.pop(key)
        else:
            d[key] = copy.deepcopy(draw(JSON_VALUES))
    runs = d.get("runs")
    if isinstance(runs, dict) and isinstance(runs.get("0.5"), dict) and runs["0.5"].get("supervised"):
        run = runs["0.5"]["supervised"][-1]
        for key in draw(st.lists(st.sampled_from(RUN_FIELDS), max_size=2, unique=True)):
            run[key] = draw(JSON_VALUES)
    return json.dumps(d)


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=sweep_texts())
def test_any_sweep_file_is_stored_or_refused_with_a_sweep_file_error(store, tmp_path_factory, text):
    sweeps = SweepStore(store)
    before = sweeps.ids()
    path = write(tmp_path_factory.mktemp("sweep", numbered=True), text)
    try:
        sid = sweeps.import_sweep_json(path)
    except Exception as e:  # noqa: BLE001 - the property is about the type
        assert isinstance(e, SweepFileError), f"{type(e).__name__}: {e}"
        assert str(e).startswith(str(path)) and str(e)[len(str(path)):].strip(": ")
        assert sweeps.ids() == before  # nothing half-stored
        event("refused")
        return
    event("stored")
    res = sweeps.get(sid)
    assert res is not None and res.runs_done <= res.runs_total
    assert len(res.csv_rows()) == len(res.label_fractions) * len(res.missing) * len(res.methods)
    for m in res.methods:
        res.grid(m)
    res.summary()
