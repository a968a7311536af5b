"""PAC-Bayes mathematics for pruned / stochastic networks (pure functions of floats, tensors and modules;
no configuration, no runner, no Ray).

Where "the bound" lives, bottom-up:

* ``kl`` — Bernoulli kl and kl⁻¹ (paper 004 App. A.2);
* ``kl_divergences`` — KL(Q‖P) of Gaussian and spike-and-slab distributions (paper 000 eqs. (3)–(5), paper 004 B.4);
* ``theorems`` — the bound formulas: Theorem 1 and the kl bound (Theorem 2) of paper 004, given R̂, KL, n, δ;
* ``certificate`` — a reported certificate: the Monte-Carlo step R_up = kl⁻¹(R̂_m, log(2/δ′)/m), the
  union bound over a declared grid (δ/K, δ′/K), confidence 1 − δ − δ′, recertification;
* ``ticket`` — the posterior of an IMP ticket (paper 000 §4.3): optimise σ_q, then certify;
* ``stochastic`` — the spike-and-slab network of PBP/PFT (paper 004 §2, App. A–B).

Selecting the best certified configuration of a whole study is ``analysis.selection``.  Each docstring
cites its equation.
"""

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
from .theorems import bound_epsilon, kl_bound, theorem1_bound, validate_n_delta
from .ticket import certify_ticket

__all__ = [
    "FORMS",
    "Certificate",
    "StochasticNet",
    "bound_epsilon",
    "bounded_cross_entropy",
    "certify",
    "certify_ticket",
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
