"""What running a trial through Ray Tune + MLflow costs, against calling the core directly.

Runs the same fixed configuration N times both ways in the same process (one trial at a
time through Ray, so the two compare one-for-one) and prints the overhead per trial and the
ratio. Ray's one-time start-up is measured separately and left out of the per-trial figure.

    python bench/trial_overhead.py [--trials 6] [--epochs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()

    from search.runner import init_ray, quiet_libraries, start_search
    from trainables.core import train

    fixed = {"model": "cnn", "filters": [16, 32, 64], "batch_size": 64, "lr": 0.01, "optimizer": "adam"}
    with tempfile.TemporaryDirectory() as d:
        study = Path(d) / "overhead.yaml"
        study.write_text(textwrap.dedent(f"""\
            name: overhead
            family: optimization
            dataset: digits
            budget: {{num_samples: {args.trials}, max_epochs: {args.epochs}, scheduler: none}}
            resources: {{cpus: 1, gpus: 0}}
            fixed: {fixed}
        """))
        quiet_libraries()
        t0 = time.perf_counter()
        init_ray(None)
        ray_start = time.perf_counter() - t0

        t0 = time.perf_counter()
        for seed in range(args.trials):
            train({"dataset": "digits", **fixed, "epochs": args.epochs, "seed": seed, "device": "cpu"})
        direct = time.perf_counter() - t0

        t0 = time.perf_counter()
        start_search(study, tracking_uri=f"sqlite:///{d}/mlflow.db", runs_dir=Path(d) / "runs", name="overhead",
                     max_concurrent=1, quiet=True)
        through_ray = time.perf_counter() - t0

    per_trial = (through_ray - direct) / args.trials
    print(f"\n{args.trials} trials x {args.epochs} epochs, digits CNN, one trial at a time")
    print(f"  Ray start-up (once):           {ray_start:6.2f} s")
    print(f"  core called directly:          {direct:6.2f} s  ({direct / args.trials:.2f} s/trial)")
    print(f"  through Ray Tune + MLflow:     {through_ray:6.2f} s  ({through_ray / args.trials:.2f} s/trial)")
    print(f"  overhead per trial:            {per_trial:6.2f} s   (target < 1 s)")
    print(f"  ratio search / direct:         {through_ray / direct:6.2f}")


if __name__ == "__main__":
    main()
