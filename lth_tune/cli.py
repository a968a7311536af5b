"""Command line: ``lth-tune validate|plan|sweep|analyze|report|flatness|rehearse``.

The top floor: the only module of ``lth_tune`` that imports ``analysis`` (to draw a sweep's figures and for
``analyze``). Bad input (malformed study file, unknown key, out-of-range value, missing dataset) is reported as one
line naming the key and the fix, with exit code 2, before any Ray cluster starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lth_tune.config import StudyError, load_study

EXIT_USAGE = 2


def _add_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study file, e.g. search_spaces/l2init.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any key, e.g. --set experiment.train.epochs=2 (repeatable)")


class _PrintVersions(argparse.Action):
    """``--version``: lth-tune, Ray, Optuna, torch, torchvision, PyHessian and Python, one per line."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from lth_tune.versions import versions

        for name, version in versions().items():
            print(f"{name} {version}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lth-tune", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_PrintVersions,
                        help="print the versions of lth-tune, Ray, Optuna, torch, torchvision, PyHessian, Python")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a study file (and overrides) without running anything")
    _add_study_args(p)

    p = sub.add_parser("plan", help="what the study costs before it starts: trials, epochs, storage, device-hours")
    _add_study_args(p)
    p.add_argument("--epoch-seconds", type=float, default=None, metavar="S",
                   help="seconds per training epoch on the target device (default: time the study's step here)")
    p.add_argument("--device", default=None, help="device to time on (default: the study's experiment.device)")
    p.add_argument("--devices", type=int, default=1, help="GPUs (or CPU trial slots) the study will run on")
    p.add_argument("--per-device", type=int, default=None,
                   help="trials packed per GPU (default: 1/resources.gpu)")
    p.add_argument("--packing-gain", type=float, default=None,
                   help="throughput of the packed trials relative to one (default: min(packing, 2.5), assumed)")
    p.add_argument("--steps", type=int, default=20, help="training steps timed")

    p = sub.add_parser("sweep", help="run a study on Ray Tune with an Optuna sampler")
    _add_study_args(p)
    p.add_argument("--address", default=None, help="join a running Ray cluster, e.g. auto (default: the job's cluster "
                   "under `ray job submit`, else a new local one)")
    p.add_argument("--storage", default=None, help="experiment storage: a local/shared path or a URI (s3://, gs://)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted experiment")
    p.add_argument("--smoke", action="store_true",
                   help="the study shrunk to one grid point, one epoch and one level: checks it end to end in minutes")
    p.add_argument("--verbose", dest="verbose", action="store_const", const=1, default=0,
                   help="Tune's full trial tables instead of the one live progress block")
    p.add_argument("-v", "--verbosity", dest="verbose", type=int, choices=(0, 1, 2), default=0,
                   help="0 (default) the progress block, 1 = --verbose, 2 also the trials' own logs")

    p = sub.add_parser("rehearse", help="a cluster file's node types on a local autoscaling cluster (no cloud): "
                       "scheduling, GPU packing, storage, release of idle workers")
    p.add_argument("cluster", help="cluster file, e.g. cluster.yaml or cluster-gcp.yaml")
    p.add_argument("--study", default=None, help="take resources and max_failures from this study "
                   "(default: search_spaces/paper/l2init_resnet20_cifar10.yaml)")
    p.add_argument("--trials", type=int, default=12, help="trials of the tiny MNIST-1D rehearsal study, all at once")
    p.add_argument("--storage", default="moto", help="moto (an S3 server on loopback, the default), a directory "
                   "or a URI")
    p.add_argument("--idle-timeout-s", type=float, default=6.0, help="idle timeout of the rehearsal's workers")
    p.add_argument("--workdir", default=None, help="where the study, its data and the driver's log go")

    p = sub.add_parser("analyze", help="tables, figures and certified selection for finished experiments")
    p.add_argument("experiments", nargs="+", help="experiment directories (each with study.json and results.csv); "
                   "several together for Table 1, e.g. results/sgd results/sam results/nvrm")
    p.add_argument("--out", default=None, help="where to write tables/figures (default: EXPERIMENT/analysis)")
    p.add_argument("--delta", type=float, default=None, help="confidence δ for certified selection")

    p = sub.add_parser("report", help="one self-contained HTML page per study: claims tested, figures, tables")
    p.add_argument("experiments", nargs="+", help="experiment directories; given together they are also judged "
                   "together (e.g. results/sgd results/sam results/nvrm for Table 1)")

    p = sub.add_parser("flatness", help="Hessian trace / top eigenvalue / landscape / sharpness of a saved ticket")
    p.add_argument("checkpoint", help="an IMP level checkpoint directory (trial_*/checkpoint_*) or its imp_state.pt")
    p.add_argument("--out", default=None, help="where to write the landscape CSV/PNG and metrics.json")
    p.add_argument("--method", choices=("pyhessian", "fast"), default=None, help="default: the study's flatness.method")
    p.add_argument("--no-landscape", action="store_true")
    p.add_argument("--sharpness-sigma", type=float, default=None)
    return parser


def cmd_validate(args) -> int:
    study = load_study(args.study, args.overrides)
    s = study.search
    grid = s.grid()
    print(f"{args.study}: ok — study '{study.name}', {len(grid)} searched keys, grid size K={s.grid_size()}, "
          f"{s.trials()} trials with the {s.sampler} sampler")
    for key, values in grid.items():
        print(f"  {key}: {values}")
    b = study.experiment.bound
    if b.levels != "none" and b.prior_sigmas:
        print(f"  ticket bounds also union over {len(b.prior_sigmas)} prior σ_p values per trial: "
              f"certified selection uses K = {s.grid_size()} × {len(b.prior_sigmas)} × (levels selected over)")
    return 0


def cmd_plan(args) -> int:
    from lth_tune.runs.plan import plan_study

    study = load_study(args.study, args.overrides)
    if args.devices < 1 or (args.per_device is not None and args.per_device < 1):
        raise StudyError("plan: --devices and --per-device must be at least 1")
    plan = plan_study(study, epoch_seconds=args.epoch_seconds, device=args.device, gpus=args.devices,
                      per_gpu=args.per_device, packing_gain=args.packing_gain, steps=args.steps)
    print(plan.report())
    return 0


def cmd_sweep(args) -> int:
    from lth_tune.runs.plan import plan_study
    from lth_tune.tune.sweep import run_sweep

    study = load_study(args.study, args.overrides)
    if args.smoke:
        import torch

        study = study.smoke(gpus_available=torch.cuda.is_available())
    print(plan_study(study, time_it=False).summary_line() + f"  (lth-tune plan {args.study} adds time estimates)")
    outcome = run_sweep(study, address=args.address or job_address(), storage=args.storage, resume=args.resume,
                        source=str(Path(args.study).resolve()), verbose=args.verbose)
    if not outcome.results.empty:
        write_findings(outcome.experiment_dir)
    return 1 if outcome.num_trials and outcome.num_errors == outcome.num_trials else 0


def job_address() -> str | None:
    """The cluster of a ``ray job submit`` entrypoint: Ray's job supervisor puts its address in RAY_ADDRESS (and
    the job's config in RAY_JOB_CONFIG_JSON_ENV_VAR); anywhere else a sweep without --address starts its own."""
    import os

    if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
        return None
    return os.environ.get("RAY_ADDRESS") or None


def cmd_rehearse(args) -> int:
    from lth_tune.tune.rehearsal import rehearse

    report = rehearse(args.cluster, study=args.study, trials=args.trials, storage=args.storage,
                      idle_timeout_s=args.idle_timeout_s, workdir=args.workdir)
    print(report.text())
    return 0 if report.ok else 1


def write_findings(exp_dir: Path) -> None:
    """The experiment's figures, tables and report right away; a plotting problem never fails a sweep."""
    from analysis import analyze_experiment
    from analysis.html_report import write_reports

    try:
        analyze_experiment(exp_dir, quiet=True)
        report = write_reports([exp_dir])[0]
    except Exception as err:  # noqa: BLE001 - the results are safe on disk; say why and move on
        print(f"figures skipped ({err.__class__.__name__}: {err}); retry with: lth-tune report {exp_dir}")
        return
    tickets = exp_dir / "analysis" / "tickets.md"
    if tickets.is_file():
        for line in tickets.read_text().splitlines():
            if line.startswith("- "):
                print(line[2:])
    print(f"figures and tables: {exp_dir / 'analysis'}")
    print(f"report: {report}")


def cmd_analyze(args) -> int:
    from analysis import analyze_experiment

    return analyze_experiment(args.experiments, out=args.out, delta=args.delta)


def cmd_report(args) -> int:
    from analysis.html_report import write_reports

    dirs = [Path(d) for d in args.experiments]
    for d in dirs:
        if not (d / "study.json").is_file():
            raise StudyError(f"report: {d} is not an lth-tune experiment (no study.json); give results/NAME")
    for path in write_reports(dirs):
        print(f"report: {path}")
    return 0


def cmd_flatness(args) -> int:
    metrics = flatness_of_checkpoint(args.checkpoint, out=args.out, method=args.method,
                                     landscape=not args.no_landscape, sharpness_sigma=args.sharpness_sigma)
    print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("landscape_") or k.endswith(("png", "csv"))},
                     indent=2))
    return 0


def flatness_of_checkpoint(checkpoint: str | Path, *, out: str | Path | None = None, method: str | None = None,
                           landscape: bool = True, sharpness_sigma: float | None = None) -> dict[str, Any]:
    """Flatness of one saved IMP ticket with the study's ``flatness`` settings, some overridden; writes
    ``metrics.json`` (and the landscape CSV/PNG) to ``out`` (default: ``CHECKPOINT/flatness``)."""
    from lth_tune.runs import IMPRun, restore_run
    from lth_tune.runs.metrics import flatness_metrics
    from lth_tune.seeding import derived_seed

    run = restore_run(checkpoint)
    if not isinstance(run, IMPRun):
        raise StudyError(f"checkpoint: {checkpoint} is a PBP run; flatness is measured on IMP tickets")
    ckpt = Path(checkpoint)
    out = Path(out) if out else (ckpt if ckpt.is_dir() else ckpt.parent) / "flatness"
    out.mkdir(parents=True, exist_ok=True)
    updates: dict[str, Any] = {"landscape": landscape}
    if method:
        updates["method"] = method
    if sharpness_sigma is not None:
        updates["sharpness_sigma"] = sharpness_sigma
    cfg = run.cfg.flatness.model_copy(update=updates)
    level = run.level - 1
    metrics = flatness_metrics(run.model, run.data, cfg, seed=derived_seed(run.cfg.seed, "flatness", level),
                               artefacts_dir=out)
    metrics.update(level=level, density=run.history[-1]["density"] if run.history else 1.0)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


COMMANDS = {"validate": cmd_validate, "plan": cmd_plan, "sweep": cmd_sweep, "analyze": cmd_analyze,
            "report": cmd_report, "flatness": cmd_flatness, "rehearse": cmd_rehearse}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except StudyError as err:
        print(f"lth-tune: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("lth-tune: interrupted; continue with `lth-tune sweep FILE --resume`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
