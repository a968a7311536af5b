"""Training: optimisers restricted to unpruned weights, paper 000 eq. (1) regularisers, train/eval loops."""

from lth_tune.training.loop import DivergedError, evaluate, train_epochs
from lth_tune.training.optim import NVRM, OPTIMIZERS, SAM, SGD, Stepper, make_stepper
from lth_tune.training.regularizers import REGULARIZERS, Regularizer, l2_init, l2_norm

__all__ = [
    "NVRM", "OPTIMIZERS", "REGULARIZERS", "SAM", "SGD", "DivergedError", "Regularizer", "Stepper", "evaluate", "l2_init", "l2_norm", "make_stepper",
    "train_epochs",
]
