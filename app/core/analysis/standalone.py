"""Running the explorer without the main window: a LoadedModel straight from a checkpoint file."""
from __future__ import annotations

from app.core.state import LoadedModel
from robult_engine.checkpoint import load_checkpoint, model_from_checkpoint


def loaded_from_checkpoint(path: str, run_id: int | None = None) -> LoadedModel:
    """Load a checkpoint (no pickled code runs) into the app's LoadedModel: model in eval mode on the CPU."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    return LoadedModel(model=model, config=ckpt.config, info=ckpt.info, checkpoint_path=str(path), run_id=run_id,
                       labeled_indices=ckpt.labeled_indices.clone())
