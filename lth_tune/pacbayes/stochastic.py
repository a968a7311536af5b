"""Stochastic spike-and-slab networks (paper 004 §2, eq. (5), App. A.1, B.1, B.3, B.4).

Every prunable weight ``w_i`` (the ``weight`` of each ``nn.Linear``/``nn.Conv1d``/``nn.Conv2d`` of an
``lth_tune.models`` network, minus ``ignore``) is a spike-and-slab random variable

    w_i = b_i · (W_i + σ ε_i),   b_i ~ Bernoulli(λ_i),   ε_i ~ N(0, 1),

i.e. ``q_i = (1−λ_i) δ_0 + λ_i N(W_i, σ²)`` (eq. (5)).  The keep probability ``λ_i`` is a real
*score* mapped into (0, 1) by ``sigmoid`` or ``clamp`` (App. B.1).  The slab standard deviation σ is
one fixed constant (``σ² = prior_var``, a declared grid value, App. D.2), the same for prior and
posterior, so the slab part of the KL is ``λ_i (W_i − W⁰_i)² / (2σ²)`` and the KL below is exactly the
KL of the distribution that :meth:`StochasticNet.sample_weights` draws from.

Sampling modes
    ``"bernoulli"``  exact Gibbs predictor: ``b ~ Bernoulli(λ)`` (drawn as ``u < λ`` with ``u`` uniform in
                     float64, the precision λ and the KL are computed in) — for errors and certificates.
    ``"relaxed"``    training: ``b ~ RelaxedBernoulli(β, λ)`` (binary concrete, App. B.3, ``rsample``),
                     differentiable in the scores and the means.
    ``"mean"``       the deterministic network W (no mask, no noise).
    ``"mask"``       the deterministic network ``W ⊙ m`` for a given 0/1 mask (e.g. thresholded λ).

Parameters that are not prunable weights (biases, BatchNorm affine parameters and running statistics, ignored
layers) are deterministic and identical in prior and posterior.  They are learned in stages 1–2 on S_P only
(they belong to the prior) and frozen afterwards (:meth:`StochasticNet.freeze_deterministic`, which also keeps
BatchNorm in eval mode), so they add nothing to KL(Q‖P) and the bound stays valid.

The networks themselves are plain ``lth_tune.models`` modules (no prune masks); sampled weights are
substituted with ``torch.func.functional_call``, so every model of the zoo works unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.distributions import RelaxedBernoulli
from torch.func import functional_call

from lth_tune.models import prunable_layers
from lth_tune.pruning import is_masked
from lth_tune.pruning.criteria import lowest_k

from .kl_divergences import spike_and_slab_kl
from .per_example import mlp_linears, per_example_spike_and_slab_errors

__all__ = [
    "CLAMP_EPS",
    "CRITERIA",
    "MAPPINGS",
    "PRIOR_SHAPES",
    "StochasticNet",
    "bounded_cross_entropy",
    "criterion_scores",
    "initial_keep_probabilities",
    "keep_probability",
    "score_from_probability",
    "top_k_masks",
]

MAPPINGS = ("sigmoid", "clamp")
PRIOR_SHAPES = ("isotropic", "block_isotropic")
CRITERIA = ("magnitude", "snip", "random")
#: The clamp mapping keeps λ in [CLAMP_EPS, 1 − CLAMP_EPS] rather than [0, 1]: a prior λ⁰ ∈ {0, 1} would make
#: KL(Q‖P) infinite as soon as the posterior moves the same weight (App. B.1 clamps to [0, 1]).
CLAMP_EPS = 1e-6
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


# ----------------------------------------------------------------------------------------------- mappings
def keep_probability(score: torch.Tensor, mapping: str) -> torch.Tensor:
    """λ = Sig(score) or clamp(score) (paper 004 App. B.1), differentiable in ``score``."""
    if mapping == "sigmoid":
        return torch.sigmoid(score)
    if mapping == "clamp":
        return score.clamp(CLAMP_EPS, 1.0 - CLAMP_EPS)
    raise ValueError(f"unknown mapping {mapping!r}; valid: {', '.join(MAPPINGS)}")


def score_from_probability(lam: torch.Tensor, mapping: str) -> torch.Tensor:
    """Inverse of :func:`keep_probability` (logit for sigmoid, identity for clamp) on (0, 1)."""
    lam = torch.as_tensor(lam)
    if mapping == "sigmoid":
        return torch.logit(lam)
    if mapping == "clamp":
        return lam.clamp(CLAMP_EPS, 1.0 - CLAMP_EPS)
    raise ValueError(f"unknown mapping {mapping!r}; valid: {', '.join(MAPPINGS)}")


# ------------------------------------------------------------------------------------- prior initialisation
def stochastic_layers(model: nn.Module, ignore: Iterable[str] = ()) -> list[str]:
    """Names of the prunable layers (``lth_tune.models.prunable_layers``) not in ``ignore``."""
    ignore = {n.removesuffix(".weight") for n in ignore}
    names = [n for n, _ in prunable_layers(model)]
    unknown = sorted(ignore - set(names))
    if unknown:
        raise ValueError(f"unknown prunable layer name(s) {unknown}; prunable layers: {', '.join(names)}")
    return [n for n in names if n not in ignore]


def criterion_scores(
    model: nn.Module,
    layers: list[str],
    criterion: str,
    *,
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """One-shot pruning scores g_i, higher = more worth keeping (paper 004 §2 "Pruning masks"):

    ``magnitude`` g_i = |W_i| [Han et al.];  ``snip`` g_i = |W_i ∂L/∂W_i| on ``batch`` (cross-entropy of the
    deterministic network, eval mode) [Lee et al. 2019];  ``random`` g_i ~ U(0, 1) from ``generator``.
    """
    modules = dict(model.named_modules())
    weights = {n: modules[n].weight for n in layers}
    if criterion == "magnitude":
        return {n: w.detach().abs() for n, w in weights.items()}
    if criterion == "random":
        dev = generator.device if generator is not None else None
        return {n: torch.rand(w.shape, generator=generator, device=dev).to(w.device) for n, w in weights.items()}
    if criterion == "snip":
        if batch is None or len(batch[1]) == 0:
            raise ValueError("the snip criterion needs a batch of data (alpha > 0 in pbp mode)")
        was_training = model.training
        model.eval()
        x, y = batch
        loss = nn.functional.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, list(weights.values()))
        model.train(was_training)
        return {n: (w.detach() * g).abs() for (n, w), g in zip(weights.items(), grads)}
    raise ValueError(f"unknown criterion {criterion!r}; valid: {', '.join(CRITERIA)}")


def _flat(d: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in d.values()])


def _unflat(flat: torch.Tensor, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, start = {}, 0
    for n, t in like.items():
        out[n] = flat[start : start + t.numel()].reshape(t.shape)
        start += t.numel()
    return out


def kept_count(total: int, density: float) -> int:
    """k = round(density · D), at least 1 (Python's round: half to even)."""
    return max(1, min(total, round(density * total)))


def top_k_masks(scores: Mapping[str, torch.Tensor], density: float) -> dict[str, torch.Tensor]:
    """Global top-k bool masks keeping ``k = round(density·D)`` weights with the largest scores; ties are
    broken deterministically (the weight first in layer/row-major order is pruned first)."""
    flat = _flat(scores).to(torch.float64)
    k = kept_count(flat.numel(), density)
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[lowest_k(flat, flat.numel() - k)] = False
    return _unflat(keep, scores)


def initial_keep_probabilities(
    scores: Mapping[str, torch.Tensor], sparsity: float, *, shape: str = "block_isotropic", epsilon: float = 1e-4
) -> dict[str, torch.Tensor]:
    """Prior keep probabilities λ⁰ with expected sparsity s (paper 004 App. A.1), float64.

    ``isotropic``: λ⁰_i = 1 − s for every weight.
    ``block_isotropic`` (eq. (6)): the k = round((1−s)D) weights with the largest g_i get
    λ⁰ = 1 − ε(D−k)/k, the others λ⁰ = ε. With k = (1−s)D exactly this is eq. (6)'s 1 − εs/(1−s); writing it
    with the integer k makes the expected number of kept weights exactly k. Needs ε(D−k)/k < 1
    (eq. (6): εs/(1−s) < 1).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    like = {n: s.detach() for n, s in scores.items()}
    if shape == "isotropic":
        return {n: torch.full(s.shape, 1.0 - sparsity, dtype=torch.float64, device=s.device) for n, s in like.items()}
    if shape != "block_isotropic":
        raise ValueError(f"unknown prior shape {shape!r}; valid: {', '.join(PRIOR_SHAPES)}")
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must lie in (0, 1), got {epsilon}")
    mask = _flat(top_k_masks(like, 1.0 - sparsity))
    d, k = mask.numel(), int(mask.sum())
    high = 1.0 - epsilon * (d - k) / k
    if not high > epsilon:
        raise ValueError(
            f"block-isotropic prior needs epsilon*s/(1-s) < 1 (App. A.1 eq. (6)); got epsilon={epsilon}, "
            f"sparsity={sparsity}: lower epsilon"
        )
    lam = torch.where(mask, torch.tensor(high, dtype=torch.float64, device=mask.device),
                      torch.tensor(epsilon, dtype=torch.float64, device=mask.device))
    return _unflat(lam, like)


# ------------------------------------------------------------------------------------------------ losses
def bounded_cross_entropy(logits: torch.Tensor, y: torch.Tensor, prob_floor: float) -> torch.Tensor:
    """Cross-entropy surrogate with the probability of the true class floored at ``prob_floor`` and divided by
    log(1/prob_floor), so each term lies in [0, 1] as Theorem 1 requires (paper 004 App. A.3). Batch mean."""
    if not 0.0 < prob_floor < 1.0:
        raise ValueError(f"prob_floor must lie in (0, 1), got {prob_floor}")
    logp = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    log_floor = math.log(prob_floor)
    return (-logp.clamp_min(log_floor)).mean() / -log_floor


# ------------------------------------------------------------------------------------------ the network
class StochasticNet(nn.Module):
    """A spike-and-slab distribution over the prunable weights of ``model`` (see the module docstring).

    ``model``'s own prunable ``weight`` parameters are the slab means W; ``scores`` (float64, one per weight)
    give λ = mapping(score). ``keep_probs`` initialises λ (default 1 − 1e-4 everywhere).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        sigma: float,
        mapping: str = "sigmoid",
        layers: list[str] | None = None,
        keep_probs: Mapping[str, torch.Tensor] | None = None,
    ):
        super().__init__()
        if mapping not in MAPPINGS:
            raise ValueError(f"unknown mapping {mapping!r}; valid: {', '.join(MAPPINGS)}")
        if not sigma >= 0.0 or not math.isfinite(sigma):
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
        self.model = model
        self.sigma = float(sigma)
        self.mapping = mapping
        self.layers = list(layers) if layers is not None else stochastic_layers(model)
        modules = dict(model.named_modules())
        for n in self.layers:
            if is_masked(modules[n]):
                raise ValueError(f"layer {n!r} carries a prune mask: StochasticNet needs a plain model")
        self._modules_by_name = {n: modules[n] for n in self.layers}
        if keep_probs is None:
            keep_probs = {n: torch.full_like(m.weight, 1.0 - 1e-4, dtype=torch.float64)
                          for n, m in self._modules_by_name.items()}
        self.scores = nn.ParameterList()
        for n in self.layers:
            lam = torch.as_tensor(keep_probs[n], dtype=torch.float64)
            w = self._modules_by_name[n].weight
            if lam.shape != w.shape:
                raise ValueError(f"keep_probs[{n!r}] has shape {tuple(lam.shape)}, weight has {tuple(w.shape)}")
            self.scores.append(nn.Parameter(score_from_probability(lam, mapping).to(w.device)))
        self._frozen = False

    # --------------------------------------------------------------- parameters
    def weights(self) -> dict[str, nn.Parameter]:
        """Slab means W, ``{layer: weight parameter}``."""
        return {n: m.weight for n, m in self._modules_by_name.items()}

    def keep_probs(self) -> dict[str, torch.Tensor]:
        """λ (float64, differentiable in the scores)."""
        return {n: keep_probability(s, self.mapping) for n, s in zip(self.layers, self.scores)}

    def prunable_parameters(self) -> list[nn.Parameter]:
        return list(self.weights().values())

    def deterministic_parameters(self) -> list[nn.Parameter]:
        """Every model parameter that is not a stochastic weight (biases, BatchNorm, ignored layers)."""
        stoch = {id(p) for p in self.prunable_parameters()}
        return [p for p in self.model.parameters() if id(p) not in stoch]

    def num_weights(self) -> int:
        return sum(s.numel() for s in self.scores)

    @torch.no_grad()
    def expected_density(self) -> float:
        """E[fraction of kept prunable weights] = mean λ."""
        return float(sum(lam.sum() for lam in self.keep_probs().values()) / self.num_weights())

    @torch.no_grad()
    def mean_entropy(self) -> float:
        """Average binary entropy (bits) of the keep probabilities (paper 004 App. F.2)."""
        total = 0.0
        for lam in self.keep_probs().values():
            ent = -(torch.xlogy(lam, lam) + torch.xlogy(1 - lam, 1 - lam)) / math.log(2.0)
            total += float(ent.sum())
        return total / self.num_weights()

    def distribution(self) -> dict[str, dict[str, torch.Tensor]]:
        """A detached copy ``{"mean": {layer: W}, "keep": {layer: λ}, "score": {layer: score}}`` — the prior P
        of stage 3 (and a checkpointable snapshot)."""
        with torch.no_grad():
            return {
                "mean": {n: w.detach().clone() for n, w in self.weights().items()},
                "keep": {n: lam.detach().clone() for n, lam in self.keep_probs().items()},
                "score": {n: s.detach().clone() for n, s in zip(self.layers, self.scores)},
            }

    def kl(self, prior: Mapping[str, Mapping[str, torch.Tensor]], prior_sigma: float | None = None) -> torch.Tensor:
        """KL(Q‖P) = Σ_i kl(λ_i‖λ⁰_i) + λ_i KL(N(W_i, σ²)‖N(W⁰_i, σ_p²)) (paper 004 App. B.4), float64,
        differentiable in the scores and the means. ``prior`` is a :meth:`distribution` snapshot."""
        sp = self.sigma if prior_sigma is None else prior_sigma
        return spike_and_slab_kl(self.keep_probs(), dict(prior["keep"]), self.weights(), dict(prior["mean"]),
                                 self.sigma, sp)

    # --------------------------------------------------------------- freezing
    def freeze_deterministic(self) -> None:
        """Stop training the deterministic parameters and keep normalisation layers in eval mode (running
        statistics fixed): they are part of the prior, learned on S_P only (stage 3 of PBP)."""
        for p in self.deterministic_parameters():
            p.requires_grad_(False)
        self._frozen = True
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self._frozen:
            for m in self.model.modules():
                if isinstance(m, _NORMS):
                    m.eval()
        return self

    # --------------------------------------------------------------- sampling
    def sample_weights(
        self,
        mode: str = "bernoulli",
        *,
        beta: float = 0.5,
        generator: torch.Generator | None = None,
        masks: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{"<layer>.weight": tensor}`` for one network (see the module docstring for the modes). Randomness
        comes from ``generator`` (``"bernoulli"``; its device must match the weights) or the global RNG
        (``"relaxed"`` draws through ``torch.distributions.RelaxedBernoulli.rsample``)."""
        out = {}
        for (n, w), score in zip(self.weights().items(), self.scores):
            key = f"{n}.weight"
            if mode == "mean":
                out[key] = w
                continue
            if mode == "mask":
                if masks is None:
                    raise ValueError("mode='mask' needs masks")
                out[key] = w * masks[n].to(w.dtype)
                continue
            if self.sigma > 0:
                eps = torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype)
                slab = w + self.sigma * eps
            else:
                slab = w
            if mode == "bernoulli":
                lam = keep_probability(score, self.mapping)
                u = torch.rand(lam.shape, generator=generator, device=lam.device, dtype=lam.dtype)
                b = (u < lam).to(w.dtype)
            elif mode == "relaxed":
                b = self.relaxed_mask(score, beta).to(w.dtype)
            else:
                raise ValueError(f"unknown sampling mode {mode!r}: bernoulli, relaxed, mean or mask")
            out[key] = b * slab
        return out

    def relaxed_mask(self, score: torch.Tensor, beta: float) -> torch.Tensor:
        """b̃ ~ RelaxedBernoulli(temperature β, λ) (binary concrete, paper 004 App. B.3), in (0, 1)."""
        temp = torch.tensor(float(beta), dtype=score.dtype, device=score.device)
        if self.mapping == "sigmoid":
            dist = RelaxedBernoulli(temp, logits=score, validate_args=False)
        else:
            dist = RelaxedBernoulli(temp, probs=keep_probability(score, self.mapping), validate_args=False)
        return dist.rsample()

    def functional(self, x: torch.Tensor, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The network's output with the prunable weights replaced by ``weights``."""
        return functional_call(self.model, dict(weights), (x,), strict=False)

    def forward(self, x: torch.Tensor, mode: str = "relaxed", *, beta: float = 0.5,
                generator: torch.Generator | None = None, masks: Mapping[str, torch.Tensor] | None = None):
        return self.functional(x, self.sample_weights(mode, beta=beta, generator=generator, masks=masks))

    @torch.no_grad()
    def threshold_masks(self, density: float) -> dict[str, torch.Tensor]:
        """Deterministic mask keeping the round(density·D) weights with the largest λ (PFT, paper 004 §2.1)."""
        return top_k_masks({n: s.detach() for n, s in zip(self.layers, self.scores)}, density)

    # --------------------------------------------------------------- evaluation
    @torch.no_grad()
    @torch.no_grad()
    def per_example_errors(self, x: torch.Tensor, y: torch.Tensor, passes: int, *,
                           generator: torch.Generator) -> int:
        """Errors of ``passes × len(y)`` exact Bernoulli networks, a fresh one for every example and pass
        (:mod:`~lth_tune.pacbayes.per_example`); the model must be an MLP whose every Linear layer is stochastic."""
        linears = mlp_linears(self.model)
        if linears is None or [n for n, _ in linears] != list(self.layers):
            raise ValueError("per-example Monte Carlo needs an MLP whose every Linear layer is stochastic")
        keep = self.keep_probs()
        layers = [(self.weights()[n].detach(), keep[n].detach(), m.bias.detach()) for n, m in linears]
        was_training = self.training
        self.eval()
        try:
            return per_example_spike_and_slab_errors(layers, self.sigma, x, y, passes, generator)
        finally:
            self.train(was_training)

    def sample_errors(self, x: torch.Tensor, y: torch.Tensor, m: int, *, generator: torch.Generator | None,
                      mode: str = "bernoulli", masks: Mapping[str, torch.Tensor] | None = None,
                      batch_size: int = 1000) -> torch.Tensor:
        """0–1 error on (x, y) of each of ``m`` networks drawn from Q (float64, shape (m,)); eval mode.
        For ``mode`` "mean"/"mask" the network is deterministic and ``m`` should be 1."""
        was_training = self.training
        self.eval()
        errs = torch.zeros(m, dtype=torch.float64)
        n = len(y)
        try:
            if n == 0:
                return torch.full((m,), math.nan, dtype=torch.float64)
            for j in range(m):
                weights = self.sample_weights(mode, generator=generator, masks=masks)
                wrong = torch.zeros((), device=y.device, dtype=torch.long)
                for start in range(0, n, batch_size):
                    out = self.functional(x[start : start + batch_size], weights)
                    wrong += (out.argmax(1) != y[start : start + batch_size]).sum()
                errs[j] = wrong.item() / n
        finally:
            self.train(was_training)
        return errs
