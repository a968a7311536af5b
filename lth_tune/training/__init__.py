"""Training: optimisers restricted to unpruned weights, paper 000 eq. (1) regularisers, train/eval loops."""

from lth_tune.training.loop import evaluate, train_epochs
from lth_tune.training.optim import NVRM, SAM, SGD, Stepper, make_stepper
from lth_tune.training.regularizers import Regularizer, l2_init, l2_norm

__all__ = [
    "NVRM", "SAM", "SGD", "Regularizer", "Stepper", "evaluate", "l2_init", "l2_norm", "make_stepper",
    "train_epochs",
]
