"""An example animbench model from another package (animbench README "Add your model")."""

from animbench_example_model.model import GlobalAffineAnimator, GlobalAffineObjective

__all__ = ["GlobalAffineAnimator", "GlobalAffineObjective"]
