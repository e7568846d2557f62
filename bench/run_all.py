"""``make bench``: every benchmark, each in its own process, results to ``bench/results/NAME.json``,
then the table in ``docs/performance.md`` (``bench/report.py``).

    python bench/run_all.py [--quick] [--only NAME ...] [--skip NAME ...]

Each figure is a ratio against a baseline measured in the same run (see each script's docstring).
``search_efficiency`` takes about 12 minutes on 2 idle cores; ``--quick`` runs smoke-test sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

# name -> (full-size arguments, quick arguments); scripts with a --json option write their own file
BENCHES = {
    "core_vs_raw": ([], ["--quick"]),
    "pgd_vs_torchattacks": ([], ["--quick"]),
    "core_speed": (["--no-compile", "--samples", "2048", "--reps", "4"], ["--quick", "--no-compile"]),
    "scaling": (["--samples", "2048", "--epochs", "1"], ["--quick"]),
    "trial_overhead": ([], ["--quick"]),
    "vs_optuna": ([], ["--quick"]),
    "vs_optuna_warm": (["--warm-ray"], ["--quick", "--warm-ray"]),
    "vs_optuna_long": (["--num-samples", "64", "--pairs", "2"], ["--quick", "--num-samples", "12"]),
    "multiobjective": ([], ["--quick"]),
    "search_efficiency": ([], ["--quick"]),
    "cli_startup": ([], ["--quick"]),
}
WRITES_JSON = {"cli_startup", "core_speed", "scaling", "vs_optuna", "vs_optuna_warm", "vs_optuna_long", "multiobjective",
               "search_efficiency"}
MODULE = {"vs_optuna_warm": "vs_optuna", "vs_optuna_long": "vs_optuna"}  # one script, other arguments


def run_one(name: str, argv: list[str]) -> None:
    """In this (child) process: call the bench's main and store what it returns."""
    sys.path[:0] = [str(REPO), str(REPO / "bench")]
    module = __import__(MODULE.get(name, name))
    out = RESULTS / f"{name}.json"
    load_before = os.getloadavg()[0]
    if name in WRITES_JSON:
        module.main(argv + ["--json", str(out)])
        result = json.loads(out.read_text())
    else:
        result = module.main(argv) or {}
        result.setdefault("date", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    result["loadavg"] = [load_before, os.getloadavg()[0]]  # other processes' share of the 2 cores
    result["quick"] = "--quick" in argv
    out.write_text(json.dumps(result, indent=2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="+", choices=list(BENCHES))
    p.add_argument("--skip", nargs="+", choices=list(BENCHES), default=[])
    p.add_argument("--one", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    rest = argv[argv.index("--") + 1:] if "--" in argv else []  # the bench's own arguments
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.one:
        run_one(args.one, rest)
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    failed = []
    for name in args.only or BENCHES:
        if name in args.skip:
            continue
        full, quick = BENCHES[name]
        print(f"\n=== {name} ===", flush=True)
        cmd = [sys.executable, __file__, "--one", name, "--", *(quick if args.quick else full)]
        if subprocess.run(cmd, env=env, cwd=REPO).returncode:
            failed.append(name)
    subprocess.run([sys.executable, str(REPO / "bench" / "report.py")], env=env, cwd=REPO, check=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
