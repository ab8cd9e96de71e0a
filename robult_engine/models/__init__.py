from .robult import ModelOutput, RobultModel, build_model, combine_logits

__all__ = ["ModelOutput", "RobultModel", "build_model", "combine_logits"]
