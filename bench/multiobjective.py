"""Clean vs robust accuracy: NSGA-II on both metrics against TPE on one metric with a post-hoc front.

Both arms search the same adversarial-training space on digits (``adv_mode``, ``adv_beta``,
``lr``; training eps 0.1) with the same trials x epochs and no early stopping, through the service:
- ``tpe``: today's way, TPE on ``pgd_acc_eps0.1`` with ``pareto_with: clean_acc``
  (the front is computed after the search);
- ``nsga2``: Optuna's NSGA-II through ``OptunaSearch(metric=[pgd, clean], mode=[max, max])``
  (``sampler: nsga2`` in the study; generations of a quarter of the trials), scheduler none.
Both samplers start from the same seeded random trials (TPE's first 10, NSGA-II's first generation),
so fewer trials than that compare nothing.
Each trial's point is its final model's (clean_acc, pgd_acc_eps0.1), read from MLflow; the
score is the hypervolume of the front with reference point (0, 0) (higher is better).
Repeated over ``--seeds``; printed per seed and as a mean.

    python bench/multiobjective.py [--trials 24] [--epochs 3] [--seeds 0 1] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from report import save_result  # bench/ is the script's folder, on sys.path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROBUST, CLEAN = "pgd_acc_eps0.1", "clean_acc"

STUDY = """\
name: mo_{arm}
family: adversarial
dataset: digits
objective:
  metric: {robust}
  mode: max
  pareto_with: {{metric: {clean}, mode: max}}
budget: {{num_samples: {trials}, max_epochs: {epochs}, scheduler: none}}
resources: {{cpus: 1, gpus: 0}}
fixed:
  model: cnn
  filters: [16, 32]
  batch_size: 64
  optimizer: adam
  weight_decay: 0.0
  scheduler: cosine
  adv_eps: 0.1
  adv_steps: 3
  eval_eps: [0.1]
  eval_pgd_steps: 10
  eval_samples: 300
search:
  adv_mode: {{type: choice, values: [none, fgsm_rs, pgd]}}
  adv_beta: {{type: uniform, low: 0.0, high: 1.0, when: {{adv_mode: [fgsm_rs, pgd]}}}}
  lr: {{type: loguniform, low: 3.0e-4, high: 1.0e-2}}
seed: {seed}
sampler: {sampler}
"""


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated points (both coordinates maximized), sorted by the first."""
    pts = sorted(set(points), key=lambda p: (-p[0], -p[1]))
    out, best_y = [], float("-inf")
    for x, y in pts:
        if y > best_y:
            out.append((x, y))
            best_y = y
    return sorted(out)


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float] = (0.0, 0.0)) -> float:
    """Area dominated by the points above ``ref`` (2 objectives, both maximized).

    On the front sorted by x (y then decreasing), the strip (x_{i-1}, x_i] is covered up to y_i.
    """
    area, prev_x = 0.0, ref[0]
    for x, y in front([p for p in points if p[0] > ref[0] and p[1] > ref[1]]):
        area += (x - prev_x) * (y - ref[1])
        prev_x = x
    return area


def final_points(uri: str, parent_run_id: str) -> list[tuple[float, float]]:
    """(clean, robust) of every trial's final model, from its MLflow run (latest values)."""
    from records import schema as tracking
    from records import writer

    client = writer.client_for(uri)
    parent = client.get_run(parent_run_id)
    pts = []
    for run in tracking.child_runs(client, parent):
        m = run.data.metrics
        if CLEAN in m and ROBUST in m:
            pts.append((m[CLEAN], m[ROBUST]))
    return pts


def run_arm(arm: str, seed: int, args, tmp: Path) -> dict:
    from search.runner import start_search
    from spaces.samplers import SAMPLERS

    sampler = "tpe" if arm == "tpe" else "nsga2"
    if sampler not in SAMPLERS:
        raise SystemExit("this checkout's `search run` has no nsga2 sampler (multi-objective)")
    study = tmp / f"mo_{arm}_{seed}.yaml"
    study.write_text(STUDY.format(arm=arm, robust=ROBUST, clean=CLEAN, trials=args.trials, epochs=args.epochs,
                                  seed=seed, sampler=sampler))
    uri = f"sqlite:///{tmp}/mlflow.db"
    t0 = time.perf_counter()
    out = start_search(study, tracking_uri=uri, runs_dir=tmp / "runs", name=f"{arm}-{seed}", quiet=True)
    seconds = time.perf_counter() - t0
    pts = final_points(uri, out.parent_run_id)
    return {"points": pts, "front": front(pts), "hypervolume": hypervolume(pts), "seconds": seconds,
            "epochs": int(out.table["epochs"].sum())}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--quick", action="store_true", help="4 trials x 2 epochs, one seed")
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "multiobjective.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.epochs, args.seeds = 4, 2, args.seeds[:1]
    from search.cluster import init_ray, quiet_libraries

    quiet_libraries()
    init_ray(None)
    res: dict[str, list[dict]] = {"tpe": [], "nsga2": []}
    with tempfile.TemporaryDirectory(prefix="multiobjective_") as d:
        for i, seed in enumerate(args.seeds):
            for arm in (["tpe", "nsga2"] if i % 2 == 0 else ["nsga2", "tpe"]):
                res[arm].append(run_arm(arm, seed, args, Path(d)))
            print(f"seed {seed}: " + "   ".join(
                f"{a}: hypervolume {r[-1]['hypervolume']:.4f}, front {[(round(x, 3), round(y, 3)) for x, y in r[-1]['front']]}"
                f", {r[-1]['epochs']} epochs, {r[-1]['seconds']:.0f} s" for a, r in res.items()), flush=True)
    mean = {a: statistics.mean(r["hypervolume"] for r in rs) for a, rs in res.items()}
    ratio = mean["nsga2"] / mean["tpe"] if mean["tpe"] else float("nan")
    print(f"\nmean hypervolume (clean_acc x {ROBUST}, reference (0, 0)) over seeds {args.seeds}: "
          f"NSGA-II {mean['nsga2']:.4f}  TPE + post-hoc front {mean['tpe']:.4f}  ratio {ratio:.3f} "
          f"({args.trials} trials x {args.epochs} epochs each)")
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "trials": args.trials,
              "epochs": args.epochs, "seeds": args.seeds, "mean_hypervolume": mean, "ratio_nsga2_vs_tpe": ratio,
              "runs": res}
    save_result(args.json, result)
    return result


if __name__ == "__main__":
    main()
