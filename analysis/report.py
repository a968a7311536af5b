"""``lth-tune analyze``: run every analysis whose inputs exist in the experiments' results."""

from __future__ import annotations

from pathlib import Path

from analysis.common import load_experiment, tickets_only
from analysis.flatness import annotate, run_flatness_analyses
from analysis.imp_figures import accuracy_vs_density, accuracy_vs_lambda
from lth_tune.versions import produced_with


def analyze_experiment(exp_dirs: str | Path | list, out: str | Path | None = None, delta: float | None = None,
                       quiet: bool = False) -> int:
    """Per-experiment figures for each directory; flatness tables/figures over all of them together.

    With several directories (e.g. ``results/sgd results/sam results/nvrm`` for Table 1) the combined
    outputs go to ``--out`` (default: ``analysis_combined`` beside the first experiment).
    """
    from lth_tune.config import StudyError

    dirs = [Path(d) for d in (exp_dirs if isinstance(exp_dirs, (list, tuple)) else [exp_dirs])]
    loaded = []
    for d in dirs:
        try:
            loaded.append((d, *load_experiment(d)))
        except FileNotFoundError as err:
            raise StudyError(str(err)) from None
    if not quiet:
        for d, study, _ in loaded:  # lth-tune, Ray, Optuna, torch, … recorded in study.json
            print(f"{d.name + ': ' if len(loaded) > 1 else ''}{produced_with(study.get('versions'))}")
    if out is None:
        out = dirs[0] / "analysis" if len(dirs) == 1 else dirs[0].parent / "analysis_combined"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    frames = []
    for d, study, df in loaded:
        sub = out if len(dirs) == 1 else out / d.name
        sub.mkdir(parents=True, exist_ok=True)
        written += per_experiment(study, df, sub, exp_dir=d, delta=delta)
        frames.append(annotate(study, tickets_only(df), d.name))
    written += run_flatness_analyses(frames, out)
    if not quiet:
        for p in written:
            if p.name in ("bound_selection.md", "tickets.md"):  # the findings themselves, not only the file name
                for line in p.read_text().splitlines():
                    if line.startswith(("certified ", "- ")):
                        print(line)
            print(f"wrote {p}")
    return 0


def per_experiment(study: dict, df, out: Path, *, exp_dir: Path, delta: float | None) -> list[Path]:
    from analysis.certificates_vs_n import run_size_analyses
    from analysis.pbp_figures import run_pbp_analyses
    from analysis.ticket_bounds import run_bound_analyses
    from analysis.tickets import run_ticket_analyses

    written: list[Path] = []
    kind = study.get("study", {}).get("experiment", {}).get("kind", "imp")
    if kind == "imp":
        written += run_ticket_analyses(study, df, out)[0]
    df = tickets_only(df)
    if "density" in df and df["density"].notna().any():
        written.append(accuracy_vs_density(study, df, out, list(study["grid"])))
        p = accuracy_vs_lambda(study, df, out)
        if p is not None:
            written.append(p)
    written += run_bound_analyses(study, df, out, exp_dir=exp_dir, delta=delta) or []
    written += run_size_analyses(study, df, out)
    written += run_pbp_analyses(study, df, out, exp_dir=exp_dir, delta=delta) or []
    return written
