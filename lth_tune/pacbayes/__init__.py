"""PAC-Bayes mathematics for pruned / stochastic networks (pure functions of floats and tensors).

Modules: ``kl`` (Bernoulli kl and its inverses), ``kl_divergences`` (Gaussian / spike-and-slab
KL), ``bounds`` (paper 004 Theorems 1 and 2), ``certificate`` (Monte-Carlo sample convergence,
union bound over a declared grid, reported certificates).  Each docstring cites its equation.
"""

from .bounds import bound_epsilon, kl_bound, theorem1_bound, validate_n_delta
from .certificate import FORMS, Certificate, certify, recertify, sample_convergence_bound
from .kl import kl_bernoulli, kl_inverse_lower, kl_inverse_upper
from .kl_divergences import (
    gaussian_kl,
    gaussian_kl_zero_mean_prior,
    spike_and_slab_kl,
    spike_and_slab_kl_from_mask,
)
from .stochastic import (
    StochasticNet,
    bounded_cross_entropy,
    criterion_scores,
    initial_keep_probabilities,
    keep_probability,
    score_from_probability,
    top_k_masks,
)

__all__ = [
    "FORMS",
    "Certificate",
    "StochasticNet",
    "bound_epsilon",
    "bounded_cross_entropy",
    "certify",
    "criterion_scores",
    "gaussian_kl",
    "gaussian_kl_zero_mean_prior",
    "initial_keep_probabilities",
    "keep_probability",
    "kl_bernoulli",
    "kl_bound",
    "kl_inverse_lower",
    "kl_inverse_upper",
    "recertify",
    "sample_convergence_bound",
    "score_from_probability",
    "spike_and_slab_kl",
    "spike_and_slab_kl_from_mask",
    "theorem1_bound",
    "top_k_masks",
    "validate_n_delta",
]
