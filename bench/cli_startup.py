"""How long the read-only commands take, against ``python -c "import pandas"`` on the same machine.

Each command runs in a fresh process (``search --help``, ``validate`` on the quickstart study, and ``ls``,
``show``, ``export`` on a one-search sqlite store made here by the real writers, without Ray). The
baseline runs interleaved with them, ``--reps`` times each; the figure is the median wall time over the
baseline's median. Target (issue 17): each within 1.5x.

    python bench/cli_startup.py [--reps 5] [--json bench/results/cli_startup.json]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from report import save_result  # noqa: E402

QUICK = REPO / "spaces" / "quickstart.yaml"
TARGET = 1.5


def make_store(folder: Path, name: str = "bench-1", uri: str | None = None) -> str:
    """A finished two-trial search ``name`` in a sqlite store in ``folder`` (or in the store ``uri``), written by
    the real writers (no Ray started); ``tests/search/test_light_commands.py`` and
    ``tests/records/test_reader.py`` read the same store."""
    from records import schema, writer
    from records.states import SearchState, TrialTracker
    from search.callbacks import MlflowTrialLogger
    from spaces.study import load_study

    uri = uri or f"sqlite:///{folder / 'mlflow.db'}"
    client = writer.client_for(uri)
    parent = writer.start_parent(client, load_study(QUICK), name, QUICK, sampler="tpe")
    logger = MlflowTrialLogger(uri, parent, name, TrialTracker("val_acc", "max", 2))
    logger.setup()
    for i, tid in enumerate(("t_00001", "t_00002")):
        trial = SimpleNamespace(trial_id=tid, config={"lr": 0.01 * (i + 1)}, error_file=None,
                                placement_group_factory=SimpleNamespace(required_resources={"CPU": 1.0}))
        logger.on_trial_start(0, [], trial)
        for epoch in (1, 2):
            logger.on_trial_result(0, [], trial, {"epoch": epoch, "training_iteration": epoch,
                                                  "val_acc": 0.5 + 0.1 * epoch + 0.01 * i, "done": epoch == 2})
        logger.on_trial_complete(0, [], trial)
    logger.on_experiment_end(trials=[])
    client.set_tag(parent, schema.STATE, SearchState.FINISHED.value)
    return uri


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"})
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return seconds


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 repetitions")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    reps = 2 if args.quick else args.reps
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as d:
        folder = Path(d)
        uri = make_store(folder)
        search = [sys.executable, "-m", "search.cli"]
        commands = {"--help": ["--help"], "validate": ["validate", str(QUICK)], "ls": ["ls", "--tracking-uri", uri],
                    "show": ["show", "bench-1", "--tracking-uri", uri],
                    "export": ["export", "bench-1", "--out", str(folder / "best.yaml"), "--tracking-uri", uri]}
        baseline_cmd = [sys.executable, "-c", "import pandas"]
        times: dict[str, list[float]] = {name: [] for name in ["import pandas", *commands]}
        for _ in range(reps):  # interleaved: a burst of load on the shared machine hits both sides
            for name, extra in commands.items():
                times["import pandas"].append(timed(baseline_cmd, folder))
                times[name].append(timed(search + extra, folder))
    base = statistics.median(times["import pandas"])
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "reps": reps, "baseline_s": base,
              "target_ratio": TARGET, "commands": {}}
    print(f"baseline `python -c 'import pandas'`: {base:.2f} s (median of {len(times['import pandas'])})")
    for name in commands:
        s = statistics.median(times[name])
        result["commands"][name] = {"seconds": s, "ratio": s / base}
        print(f"search {name:9s} {s:5.2f} s  ratio {s / base:4.2f}  {'ok' if s / base <= TARGET else 'over'} "
              f"(target <= {TARGET})")
    save_result(args.json, result)
    return result


if __name__ == "__main__":
    main()
