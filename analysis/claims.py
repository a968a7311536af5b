"""The claims of paper 000 (§3–4) and paper 004 (§6–7) a study can test, each judged from the measurements.

A claim applies to a study when its results hold what it needs (e.g. two learning rates, controls,
Hessian traces); it is then judged with intervals over seeds (``lth_tune.stats``):

* ``supported`` — the measured difference has the paper's sign and its interval excludes 0;
* ``contradicted`` — the interval excludes 0 with the opposite sign;
* ``not distinguishable`` — the interval contains 0 (more seeds, or a larger effect, would be needed);
* ``not testable`` — the study lacks what the claim needs (this is said, not hidden).

Every verdict comes with its evidence: the numbers and intervals it was read from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.common import column_or_constant, tickets_only
from analysis.pbp_figures import noise_table
from analysis.tickets import configurations, verdict_table
from lth_tune.stats import Interval, compare, mean_ci, paired_difference, welch_difference

__all__ = ["CLAIMS", "Claim", "Verdict", "evaluate_claims"]

SUPPORTED, CONTRADICTED, NOT_DISTINGUISHABLE, NOT_TESTABLE = (
    "supported", "contradicted", "not distinguishable", "not testable")


@dataclass(frozen=True)
class Verdict:
    verdict: str
    evidence: str


@dataclass(frozen=True)
class Claim:
    key: str
    source: str        # paper and section
    text: str
    judge: Callable[[dict, pd.DataFrame, dict], Verdict]


def _sign_verdict(diff: Interval, expected_positive: bool) -> str:
    c = compare(diff)
    if c == "better":
        return SUPPORTED if expected_positive else CONTRADICTED
    if c == "worse":
        return CONTRADICTED if expected_positive else SUPPORTED
    return NOT_DISTINGUISHABLE if diff.n else NOT_TESTABLE


def _imp(study: dict) -> bool:
    return study.get("study", {}).get("experiment", {}).get("kind", "imp") == "imp"


def _eps_conf(study: dict) -> tuple[float, float]:
    v = study.get("study", {}).get("verdict", {})
    return float(v.get("epsilon", 0.01)), float(v.get("confidence", 0.95))


def _unregularised(study: dict, df: pd.DataFrame) -> pd.DataFrame:
    """Rows without a regulariser (λ = 0 or kind none), so lr comparisons are not confounded by λ."""
    lam = column_or_constant(df, study, "regularizer.lam").astype(float)
    kind = column_or_constant(df, study, "regularizer.kind").astype(str)
    return df[(lam == 0) | (kind == "none")]


def _lrs(study: dict, df: pd.DataFrame) -> list[float]:
    return sorted(column_or_constant(df, study, "train.lr").astype(float).unique())


def _drops(study: dict, df: pd.DataFrame, level: int) -> dict[Any, float]:
    """Per-seed test-accuracy drop from dense at ``level`` (ticket rows of one configuration)."""
    _, _, seed = configurations(study, df)
    t = tickets_only(df)
    dense = {s: a for s, a, lv in zip(seed.loc[t.index], t["test_acc"], t["level"]) if lv == 0}
    at = {s: a for s, a, lv in zip(seed.loc[t.index], t["test_acc"], t["level"]) if lv == level}
    return {s: dense[s] - at[s] for s in at if s in dense}


# --------------------------------------------------------------------------- paper 000 §3.3


def small_lr_wins(study: dict, df: pd.DataFrame, ctx: dict) -> Verdict:
    if not _imp(study) or "level" not in df:
        return Verdict(NOT_TESTABLE, "not an IMP study")
    eps, conf = _eps_conf(study)
    d = _unregularised(study, df)
    lr = _lrs(study, d)
    if not lr:
        return Verdict(NOT_TESTABLE, "no unregularised runs")
    sub = d[column_or_constant(d, study, "train.lr").astype(float) == lr[0]]
    v = verdict_table(study, sub, epsilon=eps, confidence=conf)
    if v.empty:
        return Verdict(NOT_TESTABLE, "no results")
    row = v.iloc[0]
    if row["winning_level"] is None or pd.isna(row["winning_level"]):
        return Verdict(CONTRADICTED if row["sparsest_drop"].low > eps else NOT_DISTINGUISHABLE,
                       f"lr={lr[0]:g}: no sparse level within ε={eps:g}; drop at density "
                       f"{row['sparsest_density']:.3f} is {row['sparsest_drop'].text()}")
    text = (f"lr={lr[0]:g}: mean drop ≤ ε={eps:g} down to density {row['winning_density']:.3f} "
            f"(drop {row['winning_drop'].text()})")
    controls = [k for k in ("reinit", "random_prune") if row[f"vs_{k}"] not in ("not run", "n/a")]
    if controls:
        text += "; at level " + str(int(row["control_level"])) + ": " + ", ".join(
            f"ticket − {k} = {row[f'diff_{k}'].text()} ({row[f'vs_{k}']})" for k in controls)
        if any(row[f"vs_{k}"] == "worse" for k in controls):
            return Verdict(CONTRADICTED, text)
        if not all(row[f"vs_{k}"] == "better" for k in controls):
            return Verdict(NOT_DISTINGUISHABLE, text)
    else:
        text += " (no controls ran: winning by accuracy only)"
    return Verdict(SUPPORTED, text)


def large_lr_fails(study: dict, df: pd.DataFrame, ctx: dict) -> Verdict:
    if not _imp(study) or "level" not in df:
        return Verdict(NOT_TESTABLE, "not an IMP study")
    eps, conf = _eps_conf(study)
    d = _unregularised(study, df)
    lrs = _lrs(study, d)
    if len(lrs) < 2:
        return Verdict(NOT_TESTABLE, "needs at least two learning rates without regularisation")
    lr_col = column_or_constant(d, study, "train.lr").astype(float)
    small, large = d[lr_col == lrs[0]], d[lr_col == lrs[-1]]
    vs = verdict_table(study, small, epsilon=eps, confidence=conf).iloc[0]
    vl = verdict_table(study, large, epsilon=eps, confidence=conf).iloc[0]
    # compare where the deeper of the two stops winning (the sparsest level if neither wins)
    won = [int(v["winning_level"]) for v in (vs, vl) if v["winning_level"] is not None and not pd.isna(v["winning_level"])]
    level = max(won) if won else int(vs["sparsest_level"])
    ds, dl = _drops(study, small, level), _drops(study, large, level)
    diff = welch_difference(list(dl.values()), list(ds.values()), conf)
    density = float(tickets_only(d).loc[tickets_only(d)["level"] == level, "density"].mean())
    text = (f"at density {density:.3f} (level {level}): drop from dense lr={lrs[-1]:g} "
            f"{mean_ci(list(dl.values()), conf).text()} vs lr={lrs[0]:g} {mean_ci(list(ds.values()), conf).text()}; "
            f"difference {diff.text()}")
    for k in ("reinit", "random_prune"):
        if vl[f"vs_{k}"] not in ("not run", "n/a"):
            text += f"; large-lr ticket − {k}: {vl[f'diff_{k}'].text()} ({vl[f'vs_{k}']})"
    return Verdict(_sign_verdict(diff, expected_positive=True), text)


def l2_init_rescues(study: dict, df: pd.DataFrame, ctx: dict) -> Verdict:
    return _regulariser_effect(study, df, "l2_init", expected_help=True)


def l2_norm_does_not(study: dict, df: pd.DataFrame, ctx: dict) -> Verdict:
    return _regulariser_effect(study, df, "l2_norm", expected_help=False)


def _regulariser_effect(study: dict, df: pd.DataFrame, kind: str, *, expected_help: bool) -> Verdict:
    if not _imp(study) or "config/regularizer.lam" not in df:
        return Verdict(NOT_TESTABLE, "needs a searched regularizer.lam")
    _, conf = _eps_conf(study)
    kinds = column_or_constant(df, study, "regularizer.kind").astype(str)
    lam = df["config/regularizer.lam"].astype(float)
    if not ((kinds == kind) & (lam > 0)).any():
        return Verdict(NOT_TESTABLE, f"no {kind} runs with λ > 0")
    lrs = _lrs(study, df)
    lr_col = column_or_constant(df, study, "train.lr").astype(float)
    large = df[lr_col == lrs[-1]]
    level = int(tickets_only(large)["level"].max())
    base = _drops(study, large[large["config/regularizer.lam"].astype(float) == 0], level)
    best, best_diff = None, None
    lines = []
    for value in sorted(large.loc[(kinds.loc[large.index] == kind) & (lam.loc[large.index] > 0),
                                  "config/regularizer.lam"].astype(float).unique()):
        rows = large[(large["config/regularizer.lam"].astype(float) == value) & (kinds.loc[large.index] == kind)]
        drop = _drops(study, rows, level)
        diff = welch_difference(list(drop.values()), list(base.values()), conf)  # < 0: the drop shrinks
        lines.append(f"λ={value:g}: {diff.text()}")
        if best_diff is None or diff.mean < best_diff.mean:
            best, best_diff = value, diff
    if best_diff is None:
        return Verdict(NOT_TESTABLE, f"no {kind} runs at lr={lrs[-1]:g}")
    text = (f"lr={lrs[-1]:g}, sparsest level {level}: change of the drop from dense vs λ=0 "
            f"(negative = closer to dense): " + "; ".join(lines) + f"; largest narrowing at λ={best:g}")
    helped = best_diff.high < 0
    if expected_help:
        if helped:
            return Verdict(SUPPORTED, text)
        return Verdict(CONTRADICTED if best_diff.low > 0 else NOT_DISTINGUISHABLE, text)
    if helped:
        return Verdict(CONTRADICTED, text)
    return Verdict(SUPPORTED, text + " (no λ narrows the drop significantly)")


def large_lr_unstable(study: dict, df: pd.DataFrame, ctx: dict) -> Verdict:
    if "instability_barrier" not in df or df["instability_barrier"].notna().sum() == 0:
        return Verdict(NOT_TESTABLE, "no instability measurements (experiment.instability)")
    _, conf = _eps_conf(study)
    d = _unregularised(study, df)
    d = d[d["instability_barrier"].notna()]
    lrs = _lrs(study, d)
    if len(lrs) < 2:
        return Verdict(NOT_TESTABLE, "needs instability at two learning rates")
    lr_col = column_or_constant(d, study, "train.lr").astype(float)
    lines, verdicts = [], []
    for level in sorted(d["level"].unique()):
        a = d[(lr_col == lrs[-1]) & (d["level"] == level)]["instability_barrier"].tolist()
        b = d[(lr_col == lrs[0]) & (d["level"] == level)]["instability_barrier"].tolist()
        diff = welch_difference(a, b, conf)
        verdicts.append(_sign_verdict(diff, expected_positive=True))
        lines.append(f"level {int(level)}: barrier lr={lrs[-1]:g} {mean_ci(a, conf).text()} vs lr={lrs[0]:g} "
                     f"{mean_ci(b, conf).text()} (difference {diff.text()})")
    verdict = SUPPORTED if all(v == SUPPORTED for v in verdicts) else (
        CONTRADICTED if any(v == CONTRADICTED for v in verdicts) else NOT_DISTINGUISHABLE)
    return Verdict(verdict, "; ".join(lines))


# --------------------------------------------------------------------------- paper 000 §3.1, §3.2, §4.3


def label_noise_favours_large_lr(study: dict, df: pd.DataFrame, ctx: dict) -> Verdict:
    noise = column_or_constant(df, study, "data.label_noise").astype(float)
    if noise.nunique() < 2 or len(_lrs(study, df)) < 2:
        return Verdict(NOT_TESTABLE, "needs label noise and the learning rate searched")
    _, conf = _eps_conf(study)
    t = tickets_only(df)
    last = t[t["level"] == t["level"].max()]
    lr_col = column_or_constant(last, study, "train.lr").astype(float)
    lrs = _lrs(study, last)
    top = noise.max()
    at = last[noise.loc[last.index] == top]
    diff = welch_difference(at[lr_col.loc[at.index] == lrs[-1]]["test_acc"].tolist(),
                            at[lr_col.loc[at.index] == lrs[0]]["test_acc"].tolist(), conf)
    return Verdict(_sign_verdict(diff, True), f"{100 * top:.0f}% flipped labels, sparsest level: test accuracy "
                   f"lr={lrs[-1]:g} − lr={lrs[0]:g} = {diff.text()}")


def sam_flatter(study: dict, df: pd.DataFrame, ctx: dict) -> Verdict:
    combined = ctx.get("combined")
    if combined is None or "hessian_trace" not in combined or combined["hessian_trace"].notna().sum() == 0:
        return Verdict(NOT_TESTABLE, "needs Hessian traces of SGD and SAM/NVRM tickets (report sgd, sam, nvrm together)")
    _, conf = _eps_conf(study)
    d = combined[combined["hessian_trace"].notna()]
    d = d[d["lr"] == d.groupby("optimizer")["lr"].transform("min")]
    if "sgd" not in set(d["optimizer"]) or not ({"sam", "nvrm"} & set(d["optimizer"])):
        return Verdict(NOT_TESTABLE, "needs SGD and SAM or NVRM tickets with Hessian traces")
    lines, verdicts = [], []
    for level in sorted(d["level"].unique()):
        at = d[d["level"] == level]
        sgd = at[at["optimizer"] == "sgd"]["hessian_trace"].tolist()
        for opt in ("sam", "nvrm"):
            g = at[at["optimizer"] == opt]
            if g.empty:
                continue
            # the paper's choice: the ρ / b with the best mean test accuracy
            key = "train.rho" if opt == "sam" else "train.nvrm_b"
            best = g.groupby(key)["test_acc"].mean().idxmax()
            vals = g[g[key] == best]["hessian_trace"].tolist()
            diff = welch_difference(vals, sgd, conf)
            verdicts.append(_sign_verdict(diff, expected_positive=False))
            lines.append(f"density {at['density'].mean():.3f}: trace {opt} ({key.split('.')[-1]}={best:g}) − sgd = "
                         f"{diff.text(2)}")
    verdict = SUPPORTED if verdicts and all(v == SUPPORTED for v in verdicts) else (
        CONTRADICTED if any(v == CONTRADICTED for v in verdicts) else NOT_DISTINGUISHABLE)
    return Verdict(verdict, "; ".join(lines))


def spike_and_slab_tighter(study: dict, df: pd.DataFrame, ctx: dict) -> Verdict:
    sel = ctx.get("bound_selections") or {}
    if "ss" not in sel or "gauss" not in sel:
        return Verdict(NOT_TESTABLE, "needs certified spike-and-slab and Gaussian ticket bounds")
    ss, ga = sel["ss"], sel["gauss"]
    text = (f"certified (K={ss['K']}, confidence {ss['confidence']:.2f}): spike-and-slab {ss['bound']:.4f} "
            f"(KL/n {ss['certificate']['kl'] / ss['certificate']['n']:.3f}), Gaussian {ga['bound']:.4f} "
            f"(KL/n {ga['certificate']['kl'] / ga['certificate']['n']:.3f})")
    if math.isclose(ss["bound"], ga["bound"], abs_tol=1e-6):
        return Verdict(NOT_DISTINGUISHABLE, text)
    return Verdict(SUPPORTED if ss["bound"] < ga["bound"] else CONTRADICTED, text)


# --------------------------------------------------------------------------- paper 004


def pbp_non_vacuous(study: dict, df: pd.DataFrame, ctx: dict) -> Verdict:
    table = ctx.get("pbp_table")
    if table is None or table.empty:
        return Verdict(NOT_TESTABLE, "no PBP certificates")
    best = table.loc[table["bound_K"].idxmin()]
    text = (f"best certified bound {best['bound_K']:.4f} (K={int(best['grid_size_K'])}) at α={best['alpha']:g}, "
            f"sparsity {best['sparsity_target']:g}; test error of Q {best['test_err_posterior']:.4f}")
    return Verdict(SUPPORTED if best["bound_K"] < 1.0 else CONTRADICTED, text)


def posterior_beats_prior(study: dict, df: pd.DataFrame, ctx: dict) -> Verdict:
    table = ctx.get("pbp_table")
    if table is None or table.empty or "test_err_prior" not in table:
        return Verdict(NOT_TESTABLE, "no PBP posteriors")
    _, conf = _eps_conf(study)
    diff = paired_difference(dict(enumerate(table["test_err_prior"])), dict(enumerate(table["test_err_posterior"])),
                             conf)
    return Verdict(_sign_verdict(diff, True), f"test error P − Q over the selected cells: {diff.text(4)}")


def pft_beats_one_shot(study: dict, df: pd.DataFrame, ctx: dict) -> Verdict:
    if "test_acc_pft" not in df or df["test_acc_pft"].notna().sum() == 0:
        return Verdict(NOT_TESTABLE, "no PFT runs")
    _, conf = _eps_conf(study)
    d = df[df["test_acc_pft"].notna()]
    diff = paired_difference(dict(enumerate(d["test_acc_pft"])), dict(enumerate(d["test_acc_baseline"])), conf)
    return Verdict(_sign_verdict(diff, True), f"test accuracy PFT − one-shot over {diff.n} runs: {diff.text(4)}")


def _mean_noise_drop(study: dict, df: pd.DataFrame) -> pd.DataFrame:
    """Per PFT trial and network, the relative accuracy drop averaged over the declared variance grid (the area
    under Fig. 2 (right)'s curve on its log-v² axis); columns dense / baseline / pft, one row per trial."""
    table = noise_table(study, df)
    if table.empty:
        return table
    return table.groupby(["trial_id", "network"])["drop"].mean().unstack("network")


def _robustness(study: dict, df: pd.DataFrame, less_robust: str, more_robust: str, label: str) -> Verdict:
    drops = _mean_noise_drop(study, df)
    if drops.empty:
        return Verdict(NOT_TESTABLE, "no weight-noise measurements (pbp.mode: pft with pbp.noise_variances)")
    _, conf = _eps_conf(study)
    diff = paired_difference(drops[less_robust].to_dict(), drops[more_robust].to_dict(), conf)
    return Verdict(_sign_verdict(diff, True),
                   f"relative accuracy drop on S averaged over the v² grid, {label} over {diff.n} runs: "
                   f"{diff.text(4)} (means: {less_robust} {drops[less_robust].mean():.4f}, "
                   f"{more_robust} {drops[more_robust].mean():.4f})")


def pruned_more_robust(study: dict, df: pd.DataFrame, ctx: dict) -> Verdict:
    return _robustness(study, df, "dense", "baseline", "unpruned − one-shot pruned")


def pft_more_robust(study: dict, df: pd.DataFrame, ctx: dict) -> Verdict:
    return _robustness(study, df, "baseline", "pft", "one-shot − PFT")


CLAIMS: list[Claim] = [
    Claim("small_lr_wins", "paper 000 §3, Frankle & Carbin 2019",
          "IMP with a small learning rate finds winning tickets (within ε of dense, better than reinit and "
          "random_prune controls).", small_lr_wins),
    Claim("large_lr_fails", "paper 000 §3.3, Fig. 1, Fig. 3",
          "With a large learning rate IMP fails: the drop from dense is larger than with the small one.",
          large_lr_fails),
    Claim("large_lr_unstable", "Frankle et al. 2020; paper 000 §2",
          "The large learning rate is less stable to SGD noise (larger error barrier between two copies).",
          large_lr_unstable),
    Claim("l2_init_rescues", "paper 000 §3.3, Fig. 3 (left)",
          "Regularising the distance from the initial weights (l2_init) narrows the large learning rate's drop.",
          l2_init_rescues),
    Claim("l2_norm_does_not", "paper 000 §3.3, Fig. 3 (right)",
          "Regularising the norm (l2_norm) does not narrow it.", l2_norm_does_not),
    Claim("label_noise_large_lr", "paper 000 §3.1, Fig. 1",
          "Under label noise a larger learning rate gives better sparse subnetworks.", label_noise_favours_large_lr),
    Claim("sam_flatter", "paper 000 §3.2, Table 1",
          "SAM and NVRM find flatter tickets (smaller Hessian trace) than SGD.", sam_flatter),
    Claim("ss_tighter", "paper 000 §4.3, Fig. 4",
          "The spike-and-slab PAC-Bayes bound is tighter than the Gaussian (zero-mean prior) one.",
          spike_and_slab_tighter),
    Claim("pbp_non_vacuous", "paper 004 §7, Fig. 4",
          "PAC-Bayes pruning certifies a non-vacuous bound (< 1) on the pruned posterior's error.", pbp_non_vacuous),
    Claim("posterior_beats_prior", "paper 004 §7, Fig. 4",
          "The trained posterior Q has lower test error than the data-dependent prior P.", posterior_beats_prior),
    Claim("pft_beats_one_shot", "paper 004 §6, Fig. 1",
          "Probabilistic fine-tuning improves one-shot pruning masks.", pft_beats_one_shot),
    Claim("pruned_more_robust", "paper 004 §4, Fig. 2 (right)",
          "A pruned network loses less accuracy under weight noise than the unpruned one.", pruned_more_robust),
    Claim("pft_more_robust", "paper 004 §4, Fig. 2 (right)",
          "PFT finds masks more robust to weight noise than the one-shot (magnitude) mask.", pft_more_robust),
]


def evaluate_claims(study: dict, df: pd.DataFrame, ctx: dict | None = None) -> list[tuple[Claim, Verdict]]:
    """Every claim with its verdict on this study (``ctx``: tables computed by the analyses)."""
    ctx = ctx or {}
    df = df.reset_index(drop=True)
    out = []
    for claim in CLAIMS:
        try:
            verdict = claim.judge(study, df, ctx)
        except (KeyError, ValueError, IndexError) as err:  # a study too small for the claim: say so
            verdict = Verdict(NOT_TESTABLE, f"could not be judged here ({err.__class__.__name__}: {err})")
        out.append((claim, verdict))
    return out


def testable(results: list[tuple[Claim, Verdict]]) -> list[tuple[Claim, Verdict]]:
    return [(c, v) for c, v in results if v.verdict != NOT_TESTABLE]

