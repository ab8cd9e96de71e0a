"""Datasets: built-in ones by name, the paper's formats and user folders by path."""
from __future__ import annotations

import os
from pathlib import Path

from .base import (Batch, DataError, DatasetBundle, DatasetInfo, ModalitySpec, SplitData, check_finite,
                   make_batch)

BUILTIN = ("av-digits", "mfeat", "pid-synth", "feature-synth", "movies")

__all__ = ["BUILTIN", "Batch", "DataError", "DatasetBundle", "DatasetInfo", "ModalitySpec", "SplitData",
           "check_finite", "choose_modalities", "load_dataset", "make_batch"]


def load_dataset(data_cfg) -> DatasetBundle:
    """Load the dataset a DataConfig names (a built-in name or a path whose format is detected).

    The result keeps only `data_cfg.modalities` when that is not empty.
    """
    name = data_cfg.dataset
    if name == "pid-synth":
        from .pid_synth import make_pid_synth
        bundle = make_pid_synth(n_train=data_cfg.synth_n_train, redundant_bits=data_cfg.synth_redundant_bits,
                                unique_bits=data_cfg.synth_unique_bits, synergy_bits=data_cfg.synth_synergy_bits,
                                noise=data_cfg.synth_noise, nuisance_bits=data_cfg.synth_nuisance_bits,
                                dim=data_cfg.synth_dim, seed=data_cfg.seed)
    elif name == "feature-synth":
        from .feature_synth import make_feature_synth
        bundle = make_feature_synth(n_train=data_cfg.synth_n_train, task=data_cfg.feature_synth_task,
                                    labels=data_cfg.feature_synth_labels, dim=data_cfg.feature_synth_dim)
    elif name == "av-digits":
        from .avdigits import load_av_digits
        bundle = load_av_digits()
    elif name == "mfeat":
        from .mfeat import load_mfeat
        bundle = load_mfeat()
    elif name == "movies":
        from .movies import load_movies
        bundle = load_movies()
    else:
        path = Path(os.path.expanduser(name))
        if not path.exists():
            raise DataError(f"{name}: no such built-in dataset ({', '.join(BUILTIN)}) and no such file or folder")
        from .formats import load_path
        bundle = load_path(path)
    return choose_modalities(bundle, data_cfg.modalities, name)


def choose_modalities(bundle: DatasetBundle, names: tuple[str, ...], source: str) -> DatasetBundle:
    """Keep the named modalities (all when `names` is empty); an unknown name is a DataError naming `source`."""
    if not names:
        return bundle
    unknown = [m for m in names if m not in bundle.info.modality_names]
    if unknown:
        raise DataError(f"{source}: unknown modality {unknown[0]!r}; the dataset has "
                        f"{', '.join(bundle.info.modality_names)}")
    return bundle.select_modalities(tuple(names))
