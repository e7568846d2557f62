"""What running a trial through Ray Tune + MLflow costs, against calling the core directly.

Runs the same fixed configuration N times both ways in the same process (one trial at a
time through Ray, so the two compare one-for-one). The per-trial cost inside a search is the
slope between a 1-trial and an N-trial search, so the once-per-search costs (parent run,
artifacts, Ray start-up) are reported apart from the per-trial overhead.

    python bench/trial_overhead.py [--trials 8] [--epochs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


STUDY = """\
name: overhead
family: optimization
dataset: digits
budget: {{num_samples: {n}, max_epochs: {epochs}, scheduler: none}}
resources: {{cpus: 1, gpus: 0}}
fixed: {fixed}
"""


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="3 trials x 2 epochs")
    args = ap.parse_args(argv)
    if args.quick:
        args.trials, args.epochs = 3, 2

    import torch

    from search.cluster import init_ray, quiet_libraries
    from search.runner import start_search
    from trainables.core import train

    torch.set_num_threads(1)  # what a 1-CPU trial gets
    fixed = {"model": "cnn", "filters": [16, 32, 64], "batch_size": 64, "lr": 0.01, "optimizer": "adam"}
    with tempfile.TemporaryDirectory() as d:
        quiet_libraries()
        t0 = time.perf_counter()
        init_ray(None)
        ray_start = time.perf_counter() - t0

        def search(n: int) -> float:
            study = Path(d) / f"overhead{n}.yaml"
            study.write_text(STUDY.format(n=n, epochs=args.epochs, fixed=fixed))
            t0 = time.perf_counter()
            start_search(study, tracking_uri=f"sqlite:///{d}/mlflow.db", runs_dir=Path(d) / "runs", name=f"o{n}",
                         max_concurrent=1, quiet=True)
            return time.perf_counter() - t0

        train({"dataset": "digits", **fixed, "epochs": 1})  # warm-up: imports, data cache
        t0 = time.perf_counter()
        for seed in range(args.trials):
            train({"dataset": "digits", **fixed, "epochs": args.epochs, "seed": seed})
        direct = (time.perf_counter() - t0) / args.trials
        one = search(1)
        many = search(args.trials)

    per_trial = (many - one) / (args.trials - 1)  # the slope: what one more trial costs in a search
    print(f"\n{args.trials} trials x {args.epochs} epochs, digits CNN, one trial at a time, 1 thread")
    print(f"  Ray start-up (once per process):  {ray_start:6.2f} s")
    print(f"  search set-up + wrap-up (once):   {one - per_trial:6.2f} s  (parent run, artifacts, best model)")
    print(f"  core called directly:             {direct:6.2f} s/trial")
    print(f"  one trial inside a search:        {per_trial:6.2f} s/trial")
    print(f"  overhead per trial:               {per_trial - direct:6.2f} s   (target < 1 s)")
    print(f"  ratio search / direct per trial:  {per_trial / direct:6.2f}")
    return {"ray_start_s": ray_start, "setup_and_wrap_up_s": one - per_trial, "direct_s_per_trial": direct,
            "search_s_per_trial": per_trial, "overhead_s_per_trial": per_trial - direct, "ratio": per_trial / direct}


if __name__ == "__main__":
    main()
