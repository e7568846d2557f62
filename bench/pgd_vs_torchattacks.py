"""PGD throughput: our ``attacks.pgd`` against torchattacks' PGD on the same model and batch.

Both attacks run the same work (batch, steps, eps, step size, random start) on the
configurable CNN for 28x28 grayscale images. After a warm-up they are timed alternately,
with the order flipped every repetition, so drifts in machine load hit both alike. Printed:
each median (images/s), the ratio of the medians (ours / torchattacks, higher is better),
the median of the per-repetition ratios and the ratio of CPU times. On a shared, busy
machine wall times swing wildly; ``--threads 1`` and the CPU-time ratio stay meaningful.

    python bench/pgd_vs_torchattacks.py [--quick] [--batch 256] [--steps 10] [--reps 9] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainables.core.attacks import pgd  # noqa: E402
from trainables.core.steps import attack_step  # noqa: E402
from trainables.core.torchvision_compat import torchvision  # noqa: E402,F401 - torchattacks imports torchvision
from trainables.core.trainer import build_model  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> tuple[float, float]:
    """Wall time and this process's CPU time (all threads) of one call."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv=None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions and a smaller batch (a smoke test)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--filters", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads; 1 makes the CPU-time ratio robust on a busy machine")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.batch, args.reps = min(args.batch, 64), min(args.reps, 3)

    import torchattacks  # after trainables.core.torchvision_compat, which makes torchvision importable

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, num_classes=10, image_size=28, mean=(0.286,), std=(0.353,),
                        filters=tuple(args.filters)).to(device).eval()
    x = torch.rand(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    step = attack_step("pgd", args.eps, args.steps)
    theirs = torchattacks.PGD(model, eps=args.eps, alpha=step, steps=args.steps, random_start=True)
    runners = {
        "ours": lambda: pgd(model, x, y, args.eps, steps=args.steps, step_size=step),
        "torchattacks": lambda: theirs(x, y),
    }
    for run in runners.values():  # warm-up: allocator, kernels selection, lazy init
        run()
        run()
    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for rep in range(args.reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            w, c = timed(runners[name], device)
            wall[name].append(w)
            cpu[name].append(c)

    rate = {name: args.batch / statistics.median(t) for name, t in wall.items()}
    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch} steps={args.steps} "
          f"eps={args.eps} filters={tuple(args.filters)} reps={args.reps}")
    for name, r in rate.items():
        spread = ", ".join(f"{args.batch / t:.0f}" for t in wall[name])
        cpu_rate = args.batch / statistics.median(cpu[name])
        print(f"{name:>13}: median {r:8.1f} images/s wall, {cpu_rate:8.1f} images/CPU-s   (each rep, wall: {spread})")
    ratio = rate["ours"] / rate["torchattacks"]
    paired = statistics.median(t / o for o, t in zip(wall["ours"], wall["torchattacks"]))
    cpu_ratio = statistics.median(cpu["torchattacks"]) / statistics.median(cpu["ours"])
    print(f"ratio ours/torchattacks (target >= 1.0): {ratio:.3f} wall medians, {paired:.3f} median of paired reps, "
          f"{cpu_ratio:.3f} CPU-time medians")
    return {**rate, "ratio": ratio, "paired_ratio": paired, "cpu_ratio": cpu_ratio}


if __name__ == "__main__":
    main()
