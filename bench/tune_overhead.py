"""Ray Tune overhead of one IMP trial: start-up and per-report cost of ``imp_trainable`` vs its training time.

    python bench/tune_overhead.py [--trials 4] [--levels 4] [--epochs 1 20] [--concurrent 1]
    python bench/tune_overhead.py --footprint      # ResNet-20 / CIFAR-10 per-trial sizes (docs/scaling.md)

Runs the real trainable (``lth_tune.tune.sweep.make_trainable``: checkpoint + ``tune.report`` per level) in a
Tuner on a local Ray cluster (storage: a local directory) with a driver callback that timestamps trial start,
every result and trial end, and runs the same IMP trials in-process (no Ray) for comparison:

  start-up     trial start → first result, minus level 0's own ``time_s``: actor process, imports, data,
               model, level-0 checkpoint + report
  per report   time between two results minus that level's ``time_s``: prune + rewind outside ``time_s``,
               checkpoint (torch.save + copy to storage), report, driver callbacks (results.csv, TensorBoard)
  end          last result → trial complete
  gap          trial complete → next trial start (with --concurrent 1)
  ray.init     starting the local Ray cluster; fit setup: Tuner.fit() → first trial start (searcher,
               experiment directory); fit teardown: last trial end → fit() returns (final sync)
  Tune wall    Tuner.fit() wall time; in-process: the same trials with IMPRun(...).run() one after another

MNIST-1D MLP trials are tiny on purpose: the overhead is per trial and per level, not per step.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def study_dict(root: str, trials: int, levels: int, epochs: int, concurrent: int) -> dict:
    return {
        "name": f"overhead_e{epochs}",
        "experiment": {"seed": 0, "data": {"dataset": "mnist1d", "root": root, "train_subset": 2000},
                       "model": {"name": "mlp", "widths": [100, 100]},
                       "train": {"epochs": epochs, "batch_size": 128, "lr": 0.05}, "pruning": {"levels": levels}},
        "search": {"sampler": "grid", "max_concurrent": concurrent,
                   "space": {"seed": {"choice": list(range(trials))}}},
        "output": {"dir": str(Path(root).parent / "results")},
    }


def measure(root: str, trials: int, levels: int, epochs: int, concurrent: int, reuse: bool = False) -> dict:
    import ray
    from ray import tune

    from lth_tune.config import study_from_dict
    from lth_tune.runs import IMPRun
    from lth_tune.tune.sweep import make_searcher, make_trainable, num_samples

    study = study_from_dict(study_dict(root, trials, levels, epochs, concurrent))

    class Timing(tune.Callback):
        def __init__(self):
            self.events: dict[str, list] = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.events.setdefault(trial.trial_id, []).append(("start", time.monotonic(), None))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            from lth_tune.tune.trainable import steps_of

            compute = sum(step["time_s"] for step in steps_of(result))
            self.events[trial.trial_id].append(("result", time.monotonic(), compute))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.events[trial.trial_id].append(("end", time.monotonic(), None))

    from lth_tune.tune.results import ResultsTable

    timing = Timing()
    exp = Path(study.output.dir)
    t_init = time.monotonic()
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    init_s = time.monotonic() - t_init
    t0 = time.monotonic()
    tuner = tune.Tuner(
        make_trainable(study),
        tune_config=tune.TuneConfig(search_alg=make_searcher(study, exp / study.name), num_samples=num_samples(study),
                                    metric="val_acc", mode="max", reuse_actors=reuse),
        run_config=tune.RunConfig(name=study.name, storage_path=str(exp), callbacks=[ResultsTable(exp / study.name),
                                                                                       timing], verbose=0),
    )
    tuner.fit()
    t_end = time.monotonic()
    tune_wall = t_end - t0

    startups, reports, ends, compute = [], [], [], 0.0
    spans = sorted((ev[0][1], ev[-1][1]) for ev in timing.events.values())
    first_start, last_end = spans[0][0], max(e for _, e in spans)
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans)] if concurrent == 1 else [0.0]
    for ev in timing.events.values():
        start = ev[0][1]
        results = [(t, s) for kind, t, s in ev if kind == "result"]
        end = ev[-1][1]
        startups.append(results[0][0] - start - results[0][1])
        reports += [(t1 - t0_) - s1 for (t0_, _), (t1, s1) in itertools.pairwise(results)]
        ends.append(end - results[-1][0])
        compute += sum(s for _, s in results)

    t_in = time.monotonic()
    for seed in range(trials):
        IMPRun(study.experiment.with_params({"seed": seed}), device="cpu").run()
    inproc = time.monotonic() - t_in
    ray.shutdown()
    return {"epochs": epochs, "trials": trials, "levels": levels + 1, "tune_wall_s": tune_wall,
            "init_s": init_s, "setup_s": first_start - t0, "teardown_s": t_end - last_end,
            "gap_s": statistics.median(gaps),
            "inprocess_s": inproc, "level_time_s": compute / (trials * (levels + 1)),
            "startup_s": statistics.median(startups), "report_s": statistics.median(reports),
            "end_s": statistics.median(ends)}


def footprint() -> None:
    """Per-trial sizes of ResNet-20 on CIFAR-10 (what decides how many trials share one GPU)."""
    import io

    import torch

    from lth_tune.models import build_model
    from lth_tune.pruning import attach_masks

    torch.manual_seed(0)
    model = build_model("resnet20", input_shape=(3, 32, 32), num_classes=10)
    attach_masks(model, ignore=["fc"])
    params = sum(p.numel() for n, p in model.named_parameters())
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    x = torch.randn(128, 3, 32, 32)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (128,)))
    loss.backward()
    state = {"model": model.state_dict(), "theta_init": {n: p.detach().clone() for n, p in model.named_parameters()},
             "rewind": {n: p.detach().clone() for n, p in model.named_parameters()}}
    buf = io.BytesIO()
    torch.save(state, buf)
    data = (45000 + 5000 + 10000) * 3 * 32 * 32 * 4
    t = time.perf_counter()
    steps = 5
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (128,))).backward()
        opt.step()
    cpu_step = (time.perf_counter() - t) / steps
    print(f"ResNet-20: {params / 1e6:.3f} M parameters (weight_orig + masks)")
    print(f"  CIFAR-10 as float32 device tensors (45k train + 5k val + 10k test): {data / 2**20:.0f} MiB")
    print(f"  tensors saved for backward, batch 128: {sum(saved) / 2**20:.0f} MiB")
    print(f"  IMP checkpoint (model + θ_init + rewind point): {len(buf.getvalue()) / 2**20:.2f} MiB")
    print(f"  CPU step, batch 128, {torch.get_num_threads()} thread(s): {cpu_step * 1e3:.0f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--levels", type=int, default=4, help="IMP levels after the dense level 0")
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 20])
    p.add_argument("--concurrent", type=int, default=1)
    p.add_argument("--footprint", action="store_true")
    p.add_argument("--reuse-actors", action="store_true", help="TuneConfig(reuse_actors=True)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.footprint:
        footprint()
        return
    with tempfile.TemporaryDirectory() as d:
        root = str(Path(d) / "data")
        rows = [measure(root, args.trials, args.levels, e, args.concurrent, args.reuse_actors) for e in args.epochs]
    print(f"{'epochs':>6} {'level s':>8} {'start-up s':>10} {'per report s':>12} {'end s':>6} {'gap s':>6} "
          f"{'ray.init s':>10} {'fit setup s':>11} {'fit teardown s':>14} {'Tune wall s':>11} {'in-process s':>12}")
    for r in rows:
        print(f"{r['epochs']:>6} {r['level_time_s']:>8.3f} {r['startup_s']:>10.2f} {r['report_s']:>12.3f} "
              f"{r['end_s']:>6.2f} {r['gap_s']:>6.2f} {r['init_s']:>10.1f} {r['setup_s']:>11.1f} "
              f"{r['teardown_s']:>14.1f} {r['tune_wall_s']:>11.1f} {r['inprocess_s']:>12.1f}")


if __name__ == "__main__":
    main()
