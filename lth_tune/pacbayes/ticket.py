"""PAC-Bayes bounds for a trained IMP ticket (paper 000 §4.2–4.3, Figure 4; paper 004 Thm. 2, A.3).

For a ticket (mask m, trained weights θ̄, initial weights θ_init) two prior/posterior families are
certified on the 0–1 loss, each after optimising the posterior standard deviations σ_q:

``ss`` — spike-and-slab (paper 000 eqs. (2)–(5), "Measure 1")
    prior     P_i = (1−λ_p) δ_0 + λ_p N(θ_init,i, σ_p²)   for prunable weights,
    posterior Q_i = δ_0 (m_i = 0)  or  N(θ̄_i, σ_q,i²) (m_i = 1),
    KL = Σ_{m=1} [γ_i − log λ_p] + Σ_{m=0} [−log(1−λ_p)]     (:func:`spike_and_slab_kl_from_mask`).
    λ_p is the ticket's density, i.e. the *target density* (1−f)^level of eq. (5): it is fixed by the
    study (pruning fraction, level, layer sizes), never by the data, because IMP removes a fixed
    count ``round(f · remaining)`` per level.  Pruned weights are never perturbed (they are exactly 0
    in every sampled network).

``gauss`` — Gaussian with a zero-mean prior (paper 000 §4.1 "Measure 2", Fig. 4 right)
    prior N(0, σ_p²) and posterior N(m ⊙ θ̄, σ_q²) on **every** parameter, pruned weights included
    (they get noise: that is the point of Measure 2)          (:func:`gaussian_kl_zero_mean_prior`).

Parameters that are never pruned (biases, BatchNorm affine parameters, layers listed in
``pruning.ignore``) are part of both posteriors with the same Gaussian treatment: spike-and-slab →
prior N(θ_init, σ_p²) with λ_p = 1 (no spike: they are never pruned, a data-independent fact), so their
KL is γ_i; Gaussian → prior N(0, σ_p²).  Every parameter that is perturbed is paid for in the KL.
The prior mean is the initialisation θ_init (iteration 0, drawn from the seed), never a rewinding
point (which is trained on S and would make the prior data-dependent).  BatchNorm *running
statistics* are buffers computed from S and are held fixed: they are not covered by the KL (a
caveat for ResNet/VGG; the MLP/conv1d networks have none).

Posterior variance: one σ_q per parameter entry (as in Dziugaite & Roy 2017, whose code paper 000
follows), optimised in three stages, all on S (the posterior may depend on S):

1. a scalar σ_q = c·σ_p for c ∈ {1, 2^-½, …, 2^-13}, picked by the 0–1 kl bound estimated with 4
   networks on a fixed 2048-example subset (common random numbers across c); when a trial evaluates
   several σ_p, the previous σ_p's optimised profile (rescaled) competes here too (warm start);
2. ``steps`` Adam steps on log σ_q (per entry) minimising the differentiable Theorem 1 bound of paper
   004 (eq. (4)) with a bounded cross-entropy surrogate of the risk on reparametrised minibatches
   (Theorem 1 always has a gradient, unlike kl⁻¹ which saturates at 1 when the bound is vacuous);
3. a final global rescale σ_q ← c·σ_q, c ∈ 2^{-1.5..1.5} in quarter powers, again by the estimated
   0–1 kl bound; the stage-1 solution is kept if it estimates better.

Why per entry: it is what Dziugaite & Roy (2017) optimise and is never worse than the per-tensor or
scalar choices it contains (stages 1 and 3 guard against a noisy Adam run); the cost is the same
forward/backward passes.  All three stages only choose Q; the certificate below uses fresh samples.
Where the kl bound is vacuous (saturates at 1) candidates are ordered by Theorem 1, which does not.

Certificate (paper 004 Thm. 2 + App. A.3): R̂_m = mean 0–1 error of m fresh networks from Q on
the **whole** bound set S (n = |S|, fresh random stream independent of the optimisation),
R_up = kl⁻¹(R̂_m ‖ log(2/δ′)/m), bound = kl⁻¹(R_up ‖ (KL + log(2√n/δ))/n), confidence 1−δ−δ′
(:func:`certify`, form "kl", the "variational KL bound" of paper 000 §4.3).

Prior σ_p: a declared grid, never an oracle value.  With ``prior_sigmas = [σ_1..σ_J]`` a trial
evaluates all J priors and reports the best, certified at (δ/J, δ′/J); the per-σ_p ingredients are
reported too (``<prefix>_sp<j>_*``) so that ``analysis.bounds`` can recertify every candidate at δ/K
with K = (declared search grid) × J (× levels).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lth_tune.models import eval_mode
from lth_tune.pruning import parameter_attribute, preserved_weight_attributes, trainable_parameters
from lth_tune.seeding import generator

from .certificate import Certificate, certify
from .kl_divergences import gaussian_kl_zero_mean_prior, spike_and_slab_kl_from_mask
from .per_example import mlp_linears, per_example_gaussian_errors
from .theorems import kl_bound, theorem1_bound

__all__ = [
    "FORMULATIONS",
    "PREFIXES",
    "PosteriorSpace",
    "TicketBound",
    "bound_ticket",
    "certify_ticket",
    "gibbs_error",
    "posterior_kl",
    "selection_key",
]

#: formulation name -> metric prefix
PREFIXES = {"spike_and_slab": "ss", "gaussian": "gauss"}
FORMULATIONS = tuple(PREFIXES)

_EVAL_CHUNK = 4096
_SEARCH_EXAMPLES = 2048     # stage 1/3 subset of S
_SEARCH_SAMPLES = 4         # networks per candidate scale (common random numbers)
_COARSE = [2.0 ** (-k / 2) for k in range(27)]          # c = 1 .. 2^-13 (× σ_p)
_FINE = [2.0 ** (k / 4) for k in range(-6, 7)]              # c = 2^-1.5 .. 2^1.5 (× σ_q)
_PROB_FLOOR = 1e-2          # bounded CE surrogate: min(CE, log 1/p) / log 1/p ∈ [0, 1] (paper 004 A.3)
ADAM_LR = 0.05             # default learning rate of the Adam steps on log σ_q
BATCH_SIZE = 256           # default minibatch of those steps


# --------------------------------------------------------------------------- the posterior's space


@dataclass
class PosteriorSpace:
    """Every trainable parameter of a (masked) model, with its mask and initial value.

    ``names``, ``masks`` and ``mask_names`` come from :func:`lth_tune.pruning.trainable_parameters`
    (``masks[i]`` is None for never-pruned parameters).  ``mean`` holds detached copies of θ̄ (for pruned
    layers the stored parameter; the effective weight is that times its mask).
    """

    names: list[str]
    mean: list[Tensor]
    init: list[Tensor]
    masks: list[Tensor | None]
    mask_names: list[str | None]
    density: float

    @classmethod
    def from_model(cls, model: nn.Module, theta_init: Mapping[str, Tensor]) -> PosteriorSpace:
        names, mean, init, masks, mask_names = [], [], [], [], []
        kept = total = 0.0
        for name, p, buf, mask_name in trainable_parameters(model):
            if name not in theta_init:
                raise KeyError(f"theta_init has no entry for parameter {name!r} (keys: {sorted(theta_init)[:8]}…)")
            mask = None
            if buf is not None:
                mask = buf.detach().to(dtype=p.dtype, device=p.device)
                kept += float(mask.sum())
                total += mask.numel()
            names.append(name)
            mean.append(p.detach().clone())
            init.append(theta_init[name].detach().to(dtype=p.dtype, device=p.device))
            masks.append(mask)
            mask_names.append(mask_name)
        density = kept / total if total else 1.0
        return cls(names, mean, init, masks, mask_names, density)

    @property
    def device(self) -> torch.device:
        return self.mean[0].device

    def numel(self, formulation: str) -> int:
        """Number of perturbed parameters (spike-and-slab: unpruned + never-pruned; Gaussian: all)."""
        if formulation == "gaussian":
            return sum(t.numel() for t in self.mean)
        return int(sum(t.numel() if m is None else float(m.sum()) for t, m in zip(self.mean, self.masks)))

    def overrides(self, formulation: str, noise: Sequence[Tensor] | None) -> dict[str, Tensor]:
        """Parameters/buffers for :func:`torch.func.functional_call` for one sampled network.

        ``noise[i]`` = σ_q,i ⊙ ε_i (``None``: the posterior mean).  Spike-and-slab: noise only where the
        mask is 1 (pruned entries keep θ̄ and the mask zeroes them).  Gaussian: the parameter becomes
        ``m ⊙ θ̄ + noise`` and its mask buffer is replaced by ones (pruned weights noisy).
        """
        out: dict[str, Tensor] = {}
        for i, (name, mu, mask, mname) in enumerate(zip(self.names, self.mean, self.masks, self.mask_names)):
            e = None if noise is None else noise[i]
            if formulation == "spike_and_slab":
                if e is None:
                    out[name] = mu
                else:
                    out[name] = mu + (e if mask is None else e * mask)
            else:
                base = mu if mask is None else mu * mask
                out[name] = base if e is None else base + e
                if mname is not None:
                    out[mname] = torch.ones_like(mask)
        return out

    def kl(self, formulation: str, sigma_q: Sequence[Tensor], prior_sigma: float) -> Tensor:
        """KL(Q‖P) (differentiable in σ_q) in the dtype of ``sigma_q``."""
        dtype = sigma_q[0].dtype
        theta = {n: t.to(dtype) for n, t in zip(self.names, self.mean)}
        sq = dict(zip(self.names, sigma_q))
        if formulation == "spike_and_slab":
            mask = {n: (torch.ones_like(t) if m is None else m).to(dtype)
                    for n, t, m in zip(self.names, self.mean, self.masks)}
            init = {n: t.to(dtype) for n, t in zip(self.names, self.init)}
            lam = {n: (1.0 if m is None else self.density) for n, m in zip(self.names, self.masks)}
            return spike_and_slab_kl_from_mask(mask, theta, init, sq, float(prior_sigma), lam)
        mask = {n: (None if m is None else m.to(dtype)) for n, m in zip(self.names, self.masks)}
        return gaussian_kl_zero_mean_prior(theta, sq, float(prior_sigma), mask)


def posterior_kl(model: nn.Module, theta_init: Mapping[str, Tensor], sigma_q: Sequence[Tensor],
                 formulation: str, prior_sigma: float) -> float:
    """KL(Q‖P) in float64 of the given formulation at ``sigma_q`` (one tensor per trainable parameter)."""
    space = PosteriorSpace.from_model(model, theta_init)
    return float(space.kl(formulation, [s.detach().double() for s in sigma_q], prior_sigma))


# --------------------------------------------------------------------------- evaluation helpers


class BatchNormStatistics:
    """Recompute the BatchNorm running statistics of each sampled network on data disjoint from the bound set.

    A network's BatchNorm statistics are part of the predictor. Statistics computed on the bound set S (the
    ticket's own, from training) would make the predictor family depend on S through quantities the KL does
    not pay for; recomputed on ``x`` (e.g. the validation split) for every network drawn from Q, each sampled
    predictor depends on Q's draw and on data independent of S only. Statistics are cumulative averages
    (momentum None) over ``x`` in batches of ``batch_size``; only BatchNorm layers switch to training mode.
    Use as a context manager: the model's own statistics and momenta are restored afterwards.
    """

    def __init__(self, model: nn.Module, x: Tensor, batch_size: int = 512):
        self.model, self.x, self.batch_size = model, x, batch_size
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                       and m.track_running_stats]

    def __enter__(self):
        self.saved = [({k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None}, m.momentum)
                      for m in self.layers]
        return self

    def __exit__(self, *exc) -> bool:
        with torch.no_grad():
            for m, (buffers, momentum) in zip(self.layers, self.saved):
                for k, b in buffers.items():
                    getattr(m, k).copy_(b)
                m.momentum = momentum
                m.eval()
        return False

    @torch.no_grad()
    def __call__(self, params: dict[str, Tensor]) -> None:
        """Set the BatchNorm statistics of the network with parameters ``params`` from ``x``."""
        if not self.layers:
            return
        for m in self.layers:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for s in range(0, self.x.shape[0], self.batch_size):
            functional_call(self.model, params, (self.x[s:s + self.batch_size],))
        for m in self.layers:
            m.eval()


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _errors(model: nn.Module, params: dict[str, Tensor], x: Tensor, y: Tensor,
            bn_stats: BatchNormStatistics | None = None) -> Tensor:
    """Number of misclassified examples (0–1 loss summed), as a float tensor; ``bn_stats`` first sets the
    network's BatchNorm statistics."""
    if bn_stats is not None:
        bn_stats(params)
    total = torch.zeros((), device=x.device)
    for s in range(0, x.shape[0], _EVAL_CHUNK):
        out = functional_call(model, params, (x[s:s + _EVAL_CHUNK],))
        total += (out.argmax(1) != y[s:s + _EVAL_CHUNK]).sum()
    return total


def _noise(space: PosteriorSpace, sigma_q: Sequence[Tensor], gen: torch.Generator) -> list[Tensor]:
    return [s * torch.randn(mu.shape, generator=gen, device=mu.device, dtype=mu.dtype)
            for s, mu in zip(sigma_q, space.mean)]


def _bounded_ce(logits: Tensor, y: Tensor) -> Tensor:
    cap = math.log(1.0 / _PROB_FLOOR)
    return torch.clamp(torch.nn.functional.cross_entropy(logits, y, reduction="none"), max=cap).mean() / cap


class _Adam:
    """Plain Adam (Kingma & Ba 2015) on a list of leaf tensors.  Hand-written because constructing the
    first ``torch.optim`` optimiser of a process imports ``torch._dynamo`` (≈3 s on one CPU core)."""

    def __init__(self, params: list[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor]) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.sub_(self.lr * (m / c1) / ((v / c2).sqrt() + self.eps))


# --------------------------------------------------------------------------- one formulation, one σ_p


@dataclass
class TicketBound:
    """The optimised posterior and its certificate for one formulation and one prior σ_p."""

    formulation: str
    prior_sigma: float
    sigma_q: list[Tensor]              # per trainable parameter, same order as ``names``
    names: list[str]
    certificate: Certificate
    n_perturbed: int
    sigma_q_mean: float                # mean σ_q over the perturbed entries
    sigma_q_gmean: float               # geometric mean over the perturbed entries
    stage: str                         # which σ_q profile won: "scalar" or "per_weight"
    history: list[float] = field(default_factory=list)   # surrogate objective during Adam

    @property
    def kl_term(self) -> float:
        """(KL + log(2√n/δ_eff))/n, the normalised KL term of Figure 4."""
        return self.certificate.epsilon


def _sigma_stats(space: PosteriorSpace, formulation: str, sigma_q: Sequence[Tensor]) -> tuple[float, float]:
    s_sum = log_sum = 0.0
    count = 0
    for s, m in zip(sigma_q, space.masks):
        s = s.detach().double()
        if formulation == "spike_and_slab" and m is not None:
            keep = m != 0
            vals = s[keep]
        else:
            vals = s.flatten()
        s_sum += float(vals.sum())
        log_sum += float(vals.log().sum())
        count += vals.numel()
    return (s_sum / count, math.exp(log_sum / count)) if count else (float("nan"), float("nan"))


def bound_ticket(
    model: nn.Module,
    theta_init: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    *,
    formulation: str,
    prior_sigma: float,
    delta: float = 0.05,
    delta_prime: float = 0.01,
    mc_samples: int = 100,
    steps: int = 200,
    grid_size: int = 1,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    lr: float = ADAM_LR,
    space: PosteriorSpace | None = None,
    init_sigma_q: Sequence[Tensor] | None = None,
    bn_stats: BatchNormStatistics | None = None,
    mc_mode: str = "networks",
    mc_passes: int = 1,
) -> TicketBound:
    """Optimise σ_q for one formulation and prior σ_p on the bound set (x, y), then certify.

    The model's parameters and buffers are only *read* (sampled networks go through
    ``functional_call``); the caller must put it in eval mode and restore the prune hooks' ``weight``
    attributes afterwards (:func:`certify_ticket` does both).  ``init_sigma_q`` (a profile from another
    σ_p) competes with the scalar candidates of stage 1.  Certified with ``grid_size`` = K (δ/K, δ′/K).
    """
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
    if not prior_sigma > 0:
        raise ValueError(f"prior_sigma must be > 0, got {prior_sigma!r}")
    space = space or PosteriorSpace.from_model(model, theta_init)
    device, n = space.device, int(y.shape[0])
    if n < 1:
        raise ValueError("the bound set is empty")
    tags = (formulation, float(prior_sigma))
    shapes = [mu.shape for mu in space.mean]

    # fixed subset + common random numbers for the scale searches (stages 1 and 3)
    g_sub = generator(seed, "subset", device=device)
    sub = torch.randperm(n, generator=g_sub, device=device)[: min(n, _SEARCH_EXAMPLES)]
    xs, ys = x[sub], y[sub]
    g_crn = generator(seed, "crn", *tags, device=device)
    eps_crn = [[torch.randn(s, generator=g_crn, device=device, dtype=mu.dtype) for s, mu in zip(shapes, space.mean)]
               for _ in range(_SEARCH_SAMPLES)]

    def estimate(sigma_q: Sequence[Tensor]) -> tuple[float, float]:
        """Estimated 0–1 bound at δ (few networks, subset): the objective of the scale searches.

        (kl bound, Theorem 1 bound): compared lexicographically, so that where the kl bound saturates
        at 1 (vacuous) the unsaturated Theorem 1 value still orders the candidates."""
        with torch.no_grad():
            err = 0.0
            for eps in eps_crn:
                noise = [s * e for s, e in zip(sigma_q, eps)]
                err += float(_errors(model, space.overrides(formulation, noise), xs, ys, bn_stats))
            risk = min(max(err / (len(eps_crn) * xs.shape[0]), 0.0), 1.0)
            kl = float(space.kl(formulation, [s.double() for s in sigma_q], prior_sigma))
        if not math.isfinite(kl):
            return (math.inf, math.inf)
        return (float(kl_bound(risk, kl, n, delta)), float(theorem1_bound(risk, kl, n, delta)))

    def scaled(profile: Sequence[Tensor], c: float) -> list[Tensor]:
        return [p * c for p in profile]

    # stage 1: scalar σ_q = c·σ_p (and the warm-start profile, rescaled)
    ones = [torch.full(s, float(prior_sigma), device=device, dtype=mu.dtype) for s, mu in zip(shapes, space.mean)]
    cands = [(estimate(scaled(ones, c)), 0, c) for c in _COARSE]
    if init_sigma_q is not None:
        warm = [s.detach().to(device=device, dtype=mu.dtype) for s, mu in zip(init_sigma_q, space.mean)]
        cands += [(estimate(scaled(warm, c)), 1, c) for c in _FINE]
    _, which, c = min(cands)
    scalar = scaled(warm if which == 1 else ones, c)

    # stage 2: per-entry log σ_q by Adam on the Theorem 1 surrogate
    history: list[float] = []
    per_weight = scalar
    if steps > 0:
        log_sigma = [s.log().clone().requires_grad_(True) for s in scalar]
        adam = _Adam(log_sigma, lr)
        g_opt = generator(seed, "opt", *tags, device=device)
        for _ in range(steps):
            idx = torch.randint(n, (min(batch_size, n),), generator=g_opt, device=device)
            sig = [ls.exp() for ls in log_sigma]
            noise = [s * torch.randn(s.shape, generator=g_opt, device=device, dtype=s.dtype) for s in sig]
            logits = functional_call(model, space.overrides(formulation, noise), (x[idx],))
            risk = _bounded_ce(logits, y[idx])
            kl = space.kl(formulation, sig, prior_sigma)
            obj = theorem1_bound(risk, kl, n, delta)
            grads = torch.autograd.grad(obj, log_sigma)
            adam.step(grads)
            history.append(float(obj.detach()))
        per_weight = [ls.detach().exp() for ls in log_sigma]

    # stage 3: global rescale of the per-entry profile; keep the scalar solution if it estimates better
    candidates = [(estimate(scaled(per_weight, c)), 1, c) for c in _FINE] if steps > 0 else []
    candidates.append((estimate(scalar), 0, 1.0))  # the stage-1 solution
    _, which, c = min(candidates)
    sigma_q = scaled(per_weight, c) if which == 1 else scalar
    stage = "per_weight" if which == 1 else "scalar"

    # certificate: fresh networks (one per example and pass, or mc_samples on all of S), whole bound set
    g_mc = generator(seed, "mc", *tags, device=device)
    if mc_mode == "per_example":
        m = mc_passes * n
        emp = per_example_gaussian_errors(_gaussian_layers(model, space, formulation, sigma_q), x, y, mc_passes,
                                          g_mc) / m
    elif mc_mode == "networks":
        m = mc_samples
        emp = gibbs_error(model, space, formulation, sigma_q, x, y, mc_samples, g_mc, bn_stats)
    else:
        raise ValueError(f"mc_mode must be 'networks' or 'per_example', got {mc_mode!r}")
    with torch.no_grad():
        kl64 = float(space.kl(formulation, [s.double() for s in sigma_q], prior_sigma))
    cert = certify(min(max(emp, 0.0), 1.0), m, kl64, n, delta=delta, delta_prime=delta_prime,
                   form="kl", grid_size=grid_size)
    mean, gmean = _sigma_stats(space, formulation, sigma_q)
    return TicketBound(formulation, float(prior_sigma), [s.detach() for s in sigma_q], list(space.names), cert,
                       space.numel(formulation), mean, gmean, stage, history)


def _gaussian_layers(model: nn.Module, space: PosteriorSpace, formulation: str,
                     sigma_q: Sequence[Tensor]) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Per Linear layer of an MLP ticket, the posterior's (weight mean, weight sd, bias mean, bias sd) for
    :func:`~lth_tune.pacbayes.per_example.per_example_gaussian_errors`: spike-and-slab pruned entries are
    exactly 0 (mean and sd), the Gaussian formulation's pruned entries have mean 0 and sd σ_q."""
    linears = mlp_linears(model)
    if linears is None:
        raise ValueError("per-example Monte Carlo needs an MLP ticket (models mlp, lenet_300_100); use "
                         "mc_mode: networks for other architectures")
    where = {parameter_attribute(name): i for i, name in enumerate(space.names)}
    out = []
    for name, _ in linears:
        wi, bi = where[(name, "weight")], where[(name, "bias")]
        mask = space.masks[wi]
        w, sw = space.mean[wi], sigma_q[wi].detach()
        if mask is not None:
            w = w * mask
            if formulation == "spike_and_slab":
                sw = sw * mask
        out.append((w.float(), sw.float(), space.mean[bi].float(), sigma_q[bi].detach().float()))
    return out


def gibbs_error(model: nn.Module, space: PosteriorSpace, formulation: str, sigma_q: Sequence[Tensor], x: Tensor,
                y: Tensor, samples: int, gen: torch.Generator, bn_stats: BatchNormStatistics | None = None) -> float:
    """Mean 0–1 error of ``samples`` networks drawn from Q on (x, y): the Gibbs classifier's error."""
    with torch.no_grad():
        err = sum(float(_errors(model, space.overrides(formulation, _noise(space, sigma_q, gen)), x, y, bn_stats))
                  for _ in range(samples))
    return err / (samples * int(y.shape[0]))


# --------------------------------------------------------------------------- the IMP hook


def selection_key(cert: Certificate) -> tuple[float, float]:
    """Order certificates by their bound, ties (e.g. all vacuous at ≈1) by the unsaturated Theorem 1
    value at the same R_up, KL, n, δ_eff (paper 004 eq. (4)), which keeps ordering where kl⁻¹ saturates."""
    t1 = float(theorem1_bound(cert.risk_upper, cert.kl, cert.n, cert.delta_eff))
    return (cert.bound, t1)



def certify_ticket(model: nn.Module, theta_init: Mapping[str, Tensor], x: Tensor, y: Tensor, *,
                   prior_sigmas: Sequence[float], delta: float, delta_prime: float, mc_samples: int,
                   steps: int, seed: int, batch_size: int = BATCH_SIZE, lr: float = ADAM_LR,
                   test: tuple[Tensor, Tensor] | None = None, bn_data: Tensor | None = None,
                   mc_mode: str = "networks", mc_passes: int = 1) -> dict[str, float]:
    """Spike-and-slab and Gaussian zero-mean PAC-Bayes certificates of a trained ticket (paper 000 §4.3).

    ``(x, y)`` is the bound set S (n = len(y)); ``prior_sigmas`` the declared σ_p grid (J values);
    ``test`` (optional) the test set for the Gibbs predictor's test error. ``mc_mode`` chooses the Monte-Carlo
    step of the certificate: ``networks`` (``mc_samples`` networks, each on all of S: m = mc_samples) or
    ``per_example`` (MLPs: a fresh network for every example, ``mc_passes`` times: m = mc_passes · n,
    :mod:`~lth_tune.pacbayes.per_example`). A network with BatchNorm needs
    ``bn_data``, inputs disjoint from S (e.g. the validation split): every sampled network's statistics are
    recomputed on them (:class:`BatchNormStatistics`), so the certificate does not depend on statistics of S.  The model's parameters,
    buffers, ``weight`` attributes and per-module train/eval flags are unchanged afterwards.

    Flat metrics, ``<p>`` ∈ {``ss``, ``gauss``}, for the σ_p of the grid with the smallest
    bound (certified at δ/J, δ′/J for J = number of σ_p evaluated):
    ``<p>_bound``, ``<p>_risk`` (R_up, the training-risk term), ``<p>_emp_risk_mc`` (R̂_m),
    ``<p>_kl``, ``<p>_kl_term`` ((KL + log(2√n/δ_eff))/n), ``<p>_kl_per_n`` (KL/n), ``<p>_m``,
    ``<p>_n``, ``<p>_delta``, ``<p>_delta_prime``, ``<p>_delta_eff``, ``<p>_delta_prime_eff``,
    ``<p>_confidence``, ``<p>_grid_size`` (J), ``<p>_prior_sigma``, ``<p>_prior_index``,
    ``<p>_gibbs_test_error`` (0–1 error of m networks from Q on ``test``: the error of the
    certified stochastic predictor, not of θ̄),
    ``<p>_sigma_q_mean``, ``<p>_sigma_q_gmean``, ``<p>_n_perturbed``, ``<p>_per_weight``
    (1 if the Adam-optimised profile won, 0 for the scalar σ_q);
    per σ_p index j (the recertification ingredients): ``<p>_sp<j>_prior_sigma``,
    ``<p>_sp<j>_emp_risk_mc``, ``<p>_sp<j>_kl``, ``<p>_sp<j>_bound``, ``<p>_sp<j>_risk``,
    ``<p>_sp<j>_kl_term``, ``<p>_sp<j>_sigma_q_mean``; and ``bound_prior_density`` (λ_p),
    ``bound_num_prior_sigmas`` (J), ``bound_time_s``.
    """
    start = time.perf_counter()
    sigmas = [float(s) for s in prior_sigmas]
    if not sigmas or len(set(sigmas)) != len(sigmas):
        raise ValueError(f"prior sigmas must be a non-empty list of distinct values, got {sigmas}")
    J = len(sigmas)
    if has_batchnorm(model) and (bn_data is None or len(bn_data) == 0):
        raise ValueError("the ticket has BatchNorm layers: pass bn_data (inputs disjoint from the bound set) so "
                         "that every sampled network's statistics are recomputed without the bound set")
    out: dict[str, float] = {}
    bn = BatchNormStatistics(model, bn_data) if has_batchnorm(model) else None
    with preserved_weight_attributes(model), eval_mode(model), (bn or contextlib.nullcontext()):
        space = PosteriorSpace.from_model(model, theta_init)
        for formulation, prefix in PREFIXES.items():
            results: list[TicketBound] = []
            warm = None
            # warm-start each σ_p from the previous one's profile rescaled by the σ_p ratio
            for j, sp in enumerate(sigmas):
                init = None if warm is None else [s * (sp / warm.prior_sigma) for s in warm.sigma_q]
                r = bound_ticket(model, theta_init, x, y, formulation=formulation, prior_sigma=sp,
                                 delta=delta, delta_prime=delta_prime, mc_samples=mc_samples,
                                 steps=steps, grid_size=J, seed=seed, batch_size=batch_size, lr=lr,
                                 space=space, init_sigma_q=init, bn_stats=bn, mc_mode=mc_mode,
                                 mc_passes=mc_passes)
                results.append(r)
                warm = r
                c = r.certificate
                out.update({
                    f"{prefix}_sp{j}_prior_sigma": sp,
                    f"{prefix}_sp{j}_emp_risk_mc": c.emp_risk_mc,
                    f"{prefix}_sp{j}_kl": c.kl,
                    f"{prefix}_sp{j}_bound": c.bound,
                    f"{prefix}_sp{j}_risk": c.risk_upper,
                    f"{prefix}_sp{j}_kl_term": c.epsilon,
                    f"{prefix}_sp{j}_sigma_q_mean": r.sigma_q_mean,
                })
            best_j = min(range(J), key=lambda k: (*selection_key(results[k].certificate), k))
            out.update(_flat_metrics(prefix, results[best_j], best_j))
            if test is not None and len(test[1]) > 0:
                out[f"{prefix}_gibbs_test_error"] = gibbs_error(
                    model, space, formulation, results[best_j].sigma_q, test[0], test[1], mc_samples,
                    generator(seed, "test", formulation, device=space.device), bn)
    out["bound_prior_density"] = space.density
    out["bound_num_prior_sigmas"] = float(J)
    out["bound_time_s"] = time.perf_counter() - start
    return out


def _flat_metrics(prefix: str, r: TicketBound, j: int) -> dict[str, float]:
    c = r.certificate
    return {
        f"{prefix}_bound": c.bound,
        f"{prefix}_risk": c.risk_upper,
        f"{prefix}_emp_risk_mc": c.emp_risk_mc,
        f"{prefix}_kl": c.kl,
        f"{prefix}_kl_term": c.epsilon,
        f"{prefix}_kl_per_n": c.kl / c.n,
        f"{prefix}_m": float(c.m),
        f"{prefix}_n": float(c.n),
        f"{prefix}_delta": c.delta,
        f"{prefix}_delta_prime": c.delta_prime,
        f"{prefix}_delta_eff": c.delta_eff,
        f"{prefix}_delta_prime_eff": c.delta_prime_eff,
        f"{prefix}_confidence": c.confidence,
        f"{prefix}_grid_size": float(c.grid_size),
        f"{prefix}_prior_sigma": r.prior_sigma,
        f"{prefix}_prior_index": float(j),
        f"{prefix}_sigma_q_mean": r.sigma_q_mean,
        f"{prefix}_sigma_q_gmean": r.sigma_q_gmean,
        f"{prefix}_n_perturbed": float(r.n_perturbed),
        f"{prefix}_per_weight": 1.0 if r.stage == "per_weight" else 0.0,
    }
