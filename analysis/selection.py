"""Certified selection over a study's declared grid: the union bound (paper 004 App. D.2) for IMP tickets
(paper 000 §4.3) and PBP posteriors (paper 004 §7).

A study reports many certificates (one per trial, IMP level, prior σ_p). The configuration reported as
"best" is the bound-minimising one, so *every* candidate that could have been chosen is recertified at
(δ/K, δ′/K) from its ingredients (R̂_m, m, KL, n); then, with probability ≥ 1 − δ − δ′, all K certificates
hold simultaneously, the selected one included.

IMP tickets: a candidate is one (trial, IMP level, prior σ_p) triple and

    K = K_grid × J × L,

* K_grid — ``grid_size`` of the study's *declared* search grid (study.json), whatever the number of trials
  that actually ran (a trial that failed, diverged or was never sampled still counts);
* J — the number of prior σ_p values each trial evaluates (``bound.prior_sigmas``; 1 with a single
  ``bound.prior_sigma``; if σ_p is a searched key instead it is already in K_grid);
* L — the number of IMP levels the selection ranges over, counted from the study's declaration
  (``bound.levels``: "last" → 1; a list / "all" → the declared levels), not from the rows present.

PBP: a candidate is one trial's final certificate and K = K_grid.

Both refuse a space that is not finite (no ``grid``/``grid_size`` in study.json, ``grid_size: null``, an empty
grid) and results with two rows for the same grid point (a repeated configuration would be a second
certificate the union bound does not pay for). The two ticket formulations are separate statements, each at
its own 1 − δ − δ′.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.common import column_or_constant
from lth_tune.config import StudyError
from lth_tune.pacbayes import certify
from lth_tune.pacbayes.ticket import selection_key

__all__ = [
    "FORMULATION_NAMES",
    "NonFiniteSpaceError",
    "certified_pbp_table",
    "certified_selection",
    "declared_grid_size",
    "require_one_row_per_grid_point",
]

FORMULATION_NAMES = {"ss": "spike-and-slab (prior mean θ_init)", "gauss": "Gaussian (zero-mean prior)"}


class NonFiniteSpaceError(StudyError):
    """Certified selection needs a finite declared search space (the union bound's K)."""


# --------------------------------------------------------------------------- the declared K


def declared_grid_size(study_record: dict) -> int:
    """K_grid from study.json, after checking that the declared space is finite and consistent."""
    grid = study_record.get("grid")
    size = study_record.get("grid_size")
    if not isinstance(grid, dict):
        raise NonFiniteSpaceError(
            "certified selection refused: study.json declares no finite search grid ('grid' missing), so the "
            "union bound has no K; run the study with a finite search.space")
    if size is None or isinstance(size, bool) or not isinstance(size, (int, float)) or not math.isfinite(size) \
            or size < 1 or float(size) != int(size):
        raise NonFiniteSpaceError(
            f"certified selection refused: study.json has grid_size={size!r}; the search space is not a finite "
            "declared grid, so no union bound over it exists")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise NonFiniteSpaceError(
                f"certified selection refused: grid of {key!r} is {values!r}, not a non-empty finite list")
    product = math.prod(len(v) for v in grid.values()) if grid else 1
    if product != int(size):
        raise NonFiniteSpaceError(
            f"certified selection refused: study.json grid_size={size} disagrees with its grid "
            f"({product} points); the declared K is ambiguous")
    return int(size)


def _experiment(study_record: dict) -> dict:
    return study_record.get("study", {}).get("experiment", {})


def _searched_values(study_record: dict, key: str, default: Any) -> list[Any]:
    grid = study_record.get("grid") or {}
    return list(grid[key]) if key in grid else [default]


def declared_prior_sigmas(study_record: dict) -> int:
    """J: the largest number of σ_p values a trial of the declared grid evaluates."""
    bound = _experiment(study_record).get("bound", {})
    lists = _searched_values(study_record, "bound.prior_sigmas", bound.get("prior_sigmas"))
    return max(len(v) if v else 1 for v in lists)


def declared_levels(study_record: dict) -> list[int] | str:
    """The IMP levels at which bounds are declared: a sorted list, or "last"."""
    exp = _experiment(study_record)
    spec = _searched_values(study_record, "bound.levels", exp.get("bound", {}).get("levels", "none"))
    n_levels = _searched_values(study_record, "pruning.levels", exp.get("pruning", {}).get("levels", 0))
    if len(spec) != 1:
        raise NonFiniteSpaceError("bound.levels is itself searched: selection over levels is ambiguous")
    spec = spec[0]
    if spec == "last":
        return "last"
    top = max(int(v) for v in n_levels)
    if spec == "all":
        return list(range(top + 1))
    if spec == "none":
        return []
    return sorted({int(v) for v in spec if 0 <= int(v) <= top})


def _selection_levels(study_record: dict, df: pd.DataFrame, levels: Any) -> tuple[pd.Series, int, str]:
    """(row mask, L, description) for the levels the selection ranges over."""
    declared = declared_levels(study_record)
    if levels is None:
        levels = declared
    if isinstance(levels, str) and levels == "last":
        last = df.groupby("trial_id")["level"].transform("max")
        return df["level"] == last, 1, "the last level of each trial"
    if isinstance(levels, (int, np.integer)):
        levels = [int(levels)]
    levels = sorted({int(v) for v in levels})
    if not levels:
        raise StudyError("no bound levels are declared (bound.levels: none): nothing to select over")
    if declared != "last" and any(lv not in declared for lv in levels):
        raise StudyError(f"levels {levels} are not all declared bound levels {declared}")
    return df["level"].isin(levels), len(levels), f"levels {levels}"


# --------------------------------------------------------------------------- selection


def _candidates(df: pd.DataFrame, prefix: str, J: int) -> list[dict[str, Any]]:
    out = []
    for idx, row in df.iterrows():
        for j in range(J):
            r_col, k_col = f"{prefix}_sp{j}_emp_risk_mc", f"{prefix}_sp{j}_kl"
            if r_col not in row.index:  # single-σ_p results without per-σ_p columns
                if j > 0:
                    break
                r_col, k_col = f"{prefix}_emp_risk_mc", f"{prefix}_kl"
                sigma = row.get(f"{prefix}_prior_sigma", np.nan)
            else:
                sigma = row.get(f"{prefix}_sp{j}_prior_sigma", np.nan)
            risk, kl = row.get(r_col, np.nan), row.get(k_col, np.nan)
            if pd.isna(risk) or pd.isna(kl):
                continue
            out.append({"row": idx, "j": j, "prior_sigma": float(sigma), "emp_risk_mc": float(risk),
                        "kl": float(kl), "m": int(row[f"{prefix}_m"]), "n": int(row[f"{prefix}_n"])})
    return out


def certified_selection(study_record: dict, df: pd.DataFrame, *, prefix: str = "ss", delta: float | None = None,
                        delta_prime: float | None = None, levels: Any = None) -> dict[str, Any]:
    """Select the bound-minimising (trial, level, σ_p) with every candidate certified at δ/K, δ′/K.

    ``K = K_grid × J × L`` (module docstring): K_grid = ``study_record["grid_size"]`` (the declared
    grid, not ``len(df)``), J = σ_p values per trial, L = levels selected over (``levels``: None = the
    declared bound levels; "last"; an int or a list).  δ, δ′ default to the study's ``bound.delta`` /
    ``bound.delta_prime``.  Raises :class:`NonFiniteSpaceError` for a space that is not a finite
    declared grid and ``ValueError`` if there is nothing to select or more candidates than K.

    Returns a JSON-friendly dict: the certificate (bound, R̂_m, R_up, KL, ε, n, m, δ, δ′, δ_eff,
    δ′_eff, confidence), K and its factors, the chosen trial / level / σ_p / config, its test error.
    """
    k_grid = declared_grid_size(study_record)
    J = declared_prior_sigmas(study_record)
    bound_cfg = _experiment(study_record).get("bound", {})
    delta = float(bound_cfg.get("delta", 0.05) if delta is None else delta)
    delta_prime = float(bound_cfg.get("delta_prime", 0.01) if delta_prime is None else delta_prime)
    if f"{prefix}_bound" not in df.columns:
        raise ValueError(f"results have no {prefix}_bound column: no bounds were computed")
    rows = df[df[f"{prefix}_bound"].notna()]
    sel, L, level_text = _selection_levels(study_record, rows, levels)
    rows = rows[sel]
    require_one_row_per_grid_point(study_record, rows, f"{prefix} bound")
    K = k_grid * J * L
    cands = _candidates(rows, prefix, J)
    if not cands:
        raise ValueError(f"no {prefix} bound results to select from")
    if len(cands) > K:
        raise ValueError(f"{len(cands)} candidates but the declared grid allows K={K}: results.csv holds rows "
                         "outside the declared grid, the union bound would not cover them")
    best, best_key = None, None
    for c in cands:
        cert = certify(min(max(c["emp_risk_mc"], 0.0), 1.0), c["m"], c["kl"], c["n"], delta=delta,
                       delta_prime=delta_prime, form="kl", grid_size=K)
        c["certificate"] = cert
        row = rows.loc[c["row"]]
        key = (*selection_key(cert), str(row["trial_id"]), int(row["level"]), c["j"])
        if best_key is None or key < best_key:
            best, best_key = c, key
    cert = best["certificate"]
    row = rows.loc[best["row"]]
    config = {k.removeprefix("config/"): _plain(v) for k, v in row.items() if str(k).startswith("config/")}
    test_acc = float(row["test_acc"]) if "test_acc" in row.index and pd.notna(row["test_acc"]) else float("nan")
    result = {
        "prefix": prefix,
        "formulation": FORMULATION_NAMES.get(prefix, prefix),
        "bound": cert.bound,
        "delta": delta,
        "delta_prime": delta_prime,
        "confidence": cert.confidence,
        "delta_eff": cert.delta_eff,
        "delta_prime_eff": cert.delta_prime_eff,
        "K": K,
        "K_grid": k_grid,
        "J_prior_sigmas": J,
        "L_levels": L,
        "levels_selected_over": level_text,
        "num_candidates": len(cands),
        "num_trials_with_bounds": int(rows["trial_id"].nunique()),
        "trial_id": str(row["trial_id"]),
        "level": int(row["level"]),
        "prior_sigma": best["prior_sigma"],
        "prior_index": best["j"],
        "config": config,
        "density": _plain(row.get("density", np.nan)),
        "test_acc": test_acc,
        "test_error": 1.0 - test_acc,
        "train_acc": _plain(row.get("train_acc", np.nan)),
        "gibbs_test_error": _plain(row.get(f"{prefix}_gibbs_test_error", np.nan)),
        "trial_bound_at_delta_over_J": _plain(row.get(f"{prefix}_sp{best['j']}_bound", row.get(f"{prefix}_bound"))),
        "certificate": cert.to_dict(),
        "candidates": [(str(rows.loc[c["row"], "trial_id"]), int(rows.loc[c["row"], "level"]), c["j"],
                        c["certificate"].bound) for c in cands],
    }
    return result


def require_one_row_per_grid_point(study_record: dict, rows: pd.DataFrame, what: str) -> None:
    """Refuse ``rows`` (one per trial at the selection's level) that hold a grid point twice."""
    keys = [f"config/{k}" for k in (study_record.get("grid") or {}) if f"config/{k}" in rows]
    if not keys or rows.empty:
        return
    by_level = ["level"] if "level" in rows else []
    dup = rows.duplicated(subset=keys + by_level, keep=False)
    if dup.any():
        first = rows[dup].iloc[0]
        point = ", ".join(f"{k.removeprefix('config/')}={first[k]}" for k in keys)
        raise StudyError(f"certified selection refused: {int(dup.sum())} {what} rows share a grid point ({point}); "
                         "the union bound over the declared grid pays for one certificate per point")


def certified_pbp_table(study: dict, df: pd.DataFrame, delta: float | None = None) -> pd.DataFrame:
    """Final PBP rows (stage 3) with the certificate recomputed under the union bound over the K declared grid
    points (``bound_K``: Theorem 1, ``bound_kl_K``: Theorem 2), then the best (smallest ``bound_K``) row of
    every (alpha, sparsity, seed) cell."""
    rows = pbp_final_rows(df, "pbp", PBP_COLUMNS).copy()
    if rows.empty:
        return rows
    k = declared_grid_size(study)
    require_one_row_per_grid_point(study, rows, "PBP")
    if len(rows) > k:
        raise StudyError(f"certified selection refused: {len(rows)} PBP certificates but the declared grid has "
                         f"K={k} points")
    rows["alpha"] = column_or_constant(rows, study, "pbp.alpha").astype(float)
    rows["sparsity_target"] = column_or_constant(rows, study, "pbp.sparsity").astype(float)
    rows["seed_"] = column_or_constant(rows, study, "seed")
    for form, col in (("theorem1", "bound_K"), ("kl", "bound_kl_K")):
        rows[col] = [
            certify(r.cert_emp_risk_mc, int(r.cert_m), r.cert_kl, int(r.cert_n),
                    delta=r.cert_delta if delta is None else delta, delta_prime=r.cert_delta_prime,
                    form=form, grid_size=k).bound
            for r in rows.itertuples()
        ]
    rows["grid_size_K"] = k
    best = rows.loc[rows.groupby(["alpha", "sparsity_target", "seed_"])["bound_K"].idxmin()]
    return best.sort_values(["alpha", "sparsity_target", "seed_"]).reset_index(drop=True)


PBP_COLUMNS = ("stage", "cert_emp_risk_mc", "cert_m", "cert_kl", "cert_n", "cert_delta", "cert_delta_prime",
               "test_err_posterior", "test_err_prior")


def pbp_final_rows(df: pd.DataFrame, mode: str, required: tuple[str, ...]) -> pd.DataFrame:
    """The stage-3 rows of ``mode`` (pbp | pft) with every ``required`` column present and non-null."""
    if not all(c in df for c in required):
        return df.iloc[0:0]
    rows = df[df["stage"] == 3]
    if "mode" in rows:
        rows = rows[rows["mode"] == mode]
    return rows.dropna(subset=[c for c in required if c != "stage"])


def _plain(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v
