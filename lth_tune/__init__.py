"""lth-tune: Ray Tune + Optuna studies of lottery tickets, flatness and PAC-Bayes bounds."""
__version__ = "0.1.0"
