"""Turn a finished experiment directory (study.json + results.csv) into tables and figures.

``lth-tune analyze EXPERIMENT_DIR`` calls :func:`analyze_experiment`, which runs every analysis whose
inputs are present in the results (IMP accuracy-vs-λ/density, Table 1 Hessian traces, Figure 1 label
noise, Figure 2 landscapes, certified bound selection, …).
"""

from analysis.report import analyze_experiment

__all__ = ["analyze_experiment"]
