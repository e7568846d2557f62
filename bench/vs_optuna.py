"""The service against what a researcher would write instead: one process, Optuna, a pruner, MLflow.

Both sides run the same study (default ``spaces/quickstart.yaml``): the same space, trial count,
epochs, seed and core ``train``. The baseline is written with Optuna's own API (``TPESampler(seed)``,
``SuccessiveHalvingPruner`` with the study's grace period and reduction factor, ``trial.report`` /
``trial.should_prune`` every epoch) and logs every trial as a nested MLflow run (params, per-epoch
metrics) in its own ``sqlite:///`` store, with 1 torch thread by default (``--baseline-threads``).
The service is ``search run STUDY --quiet`` (a child calls what the console command calls:
``search.cli.main``, then ``exit_now``; the stamps need the same process). Each side is a whole new
process (interpreter start to exit), in a fresh folder; the two alternate, order flipped every
pair, so machine-load drifts hit both. Printed: each median, the ratio service / baseline (target
<= 0.7), and where the service's seconds go (import, Ray start, parent run, first trial start,
per-trial overhead, wrap-up, exit), stamped from outside the service's code
(``bench/_instrument.py``).

``--warm-ray`` measures the service against a Ray head that is already running (``ray start
--head`` once per session; ``ray.init`` finds it): each search then connects instead of starting
Ray. The head is started before the first pair and stopped after the last; the baseline does not
use it. ``--num-samples 64`` shows how the ratio moves once the fixed costs are spread over more trials.

    python bench/vs_optuna.py [--pairs 3] [--study spaces/quickstart.yaml] [--warm-ray] [--num-samples N]
                              [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import save_result  # bench/ is the script's folder, on sys.path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # after PYTHONPATH: a service_b child imports the service from its own checkout


# ------------------------------------------------------------------ the baseline (child process)
def baseline_child(args) -> None:
    t_main = time.time()
    import mlflow
    import optuna
    import torch

    from spaces.study import condition_holds, load_study
    from trainables.core import train

    t_imported = time.time()
    if args.baseline_threads:
        torch.set_num_threads(args.baseline_threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(args.study)
    metric, mode = study.objective.metric, study.objective.mode
    base = study.base_config()
    budget = study.budget
    n_trials = args.num_samples or budget.num_samples
    events: list[dict] = []

    def objective(trial: optuna.Trial) -> float:
        params: dict = {}
        for name, p in study.search.items():  # the study's space, written as Optuna suggest calls
            if not condition_holds(p.when, {**base, **params}):
                continue
            if p.type in ("choice", "grid"):
                params[name] = trial.suggest_categorical(name, p.values)
            elif p.type == "int":
                params[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
            else:
                params[name] = trial.suggest_float(name, p.low, p.high, step=p.step,
                                                   log=p.log or p.type == "loguniform")
        cfg = {**base, **params}
        start, train_s, best, pruned = time.time(), 0.0, None, False
        with mlflow.start_run(run_name=f"trial_{trial.number}", nested=True):
            mlflow.log_params(cfg)

            def on_epoch(m, trainer):
                nonlocal train_s, best, pruned
                train_s += m["epoch_time"]
                mlflow.log_metrics({k: v for k, v in m.items() if k != "epoch"}, step=int(m["epoch"]))
                value = m[metric]
                best = value if best is None or (value > best if mode == "max" else value < best) else best
                trial.report(value, int(m["epoch"]))
                if trial.should_prune():
                    pruned = True
                    return True  # the core stops after this epoch
                return False

            result = train(cfg, on_epoch=on_epoch)
            mlflow.set_tag("state", "pruned" if pruned else "completed")
        events.append({"start": start, "end": time.time(), "train": train_s, "epochs": len(result.history),
                       "best": best})
        if pruned:
            raise optuna.TrialPruned()
        return best

    mlflow.set_tracking_uri(f"sqlite:///{Path(args.workdir).resolve()}/mlflow.db")
    mlflow.set_experiment(study.name)
    sampler = optuna.samplers.TPESampler(seed=study.seed)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=budget.grace_period,
                                                    reduction_factor=int(budget.reduction_factor))
    opt = optuna.create_study(direction="maximize" if mode == "max" else "minimize", sampler=sampler, pruner=pruner)
    t_setup = time.time()
    with mlflow.start_run(run_name="optuna-baseline"):
        mlflow.log_params({f"fixed.{k}": v for k, v in study.fixed.items()})
        opt.optimize(objective, n_trials=n_trials)
    t_end = time.time()
    best = [e["best"] for e in events if e["best"] is not None]
    pick = max if mode == "max" else min
    Path(args.workdir, "events.json").write_text(json.dumps({
        "main_start": t_main, "imported": t_imported, "setup_done": t_setup, "main_end": t_end, "trials": events,
        "best": pick(best) if best else None, "threads": torch.get_num_threads()}))


# ------------------------------------------------------------------ the service (child process)
def service_child(args) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import _instrument

    _instrument.mark("main_start")
    import search.cli
    import search.runner  # noqa: F401 - what `search run` imports; wrapped below

    _instrument.mark("imports_done")
    _instrument.install()
    argv = ["run", str(args.study), "--quiet", "--name", "bench", "--runs-dir", str(Path(args.workdir) / "runs"),
            "--tracking-uri", f"sqlite:///{Path(args.workdir).resolve()}/mlflow.db"]
    if args.num_samples:
        argv += ["--num-samples", str(args.num_samples)]
    rc = search.cli.main(argv)
    _instrument.mark("main_end")
    if rc:
        raise SystemExit(rc)
    import yaml

    best = yaml.safe_load((Path(args.workdir) / "runs" / "bench" / "best.yaml").read_text())["objective"]["value"]
    _instrument.save(Path(args.workdir) / "events.json")
    Path(args.workdir, "best.json").write_text(json.dumps({"best": best}))
    exit_now = getattr(search.cli, "exit_now", None)  # what the console command does after main()
    if exit_now is not None:
        exit_now(rc)


# ------------------------------------------------------------------ the parent
def run_child(arm: str, args, workdir: Path) -> dict:
    """One whole process of one arm: baseline, service, or service_b (another checkout and/or environment)."""
    kind = "baseline" if arm == "baseline" else "service"
    repo = Path(args.b_repo).resolve() if arm == "service_b" and args.b_repo else REPO
    extra_env = dict(kv.split("=", 1) for kv in (args.b_env if arm == "service_b" else []))
    workdir.mkdir(parents=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--workdir", str(workdir),
           "--study", str(Path(args.study).resolve())]
    if args.num_samples:
        cmd += ["--num-samples", str(args.num_samples)]
    if args.baseline_threads:
        cmd += ["--baseline-threads", str(args.baseline_threads)]
    if kind == "service" and args.ray_address:
        extra_env = {"RAY_ADDRESS": args.ray_address, **HEAD_ENV, **extra_env}
    env = {**os.environ, **extra_env, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    spawn = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    exit_ = time.time()
    if proc.returncode:
        sys.exit(f"{arm} run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    events = json.loads((workdir / "events.json").read_text())
    out = {"wall": wall, "spawn": spawn, "exit": exit_}
    if kind == "service":
        import _instrument

        out["best"] = json.loads((workdir / "best.json").read_text())["best"]
        out["breakdown"] = _instrument.breakdown(events, spawn, exit_, slots=service_slots(args))
    else:
        trials = events["trials"]
        train = sum(t["train"] for t in trials)
        out["best"] = events["best"]
        out["breakdown"] = {
            "interpreter_and_imports": events["imported"] - spawn,
            "setup": events["setup_done"] - events["imported"],
            "optimize": events["main_end"] - events["setup_done"],
            "training_in_epochs": train,
            "per_trial_overhead": statistics.median(t["end"] - t["start"] - t["train"] for t in trials),
            "exit": exit_ - events["main_end"],
            "total": exit_ - spawn,
            "trials": len(trials),
            "epochs": sum(t["epochs"] for t in trials),
            "threads": events["threads"],
        }
    return out


# As scripts/dev_cluster.py: the head listens on 127.0.0.1 only, and head and drivers agree on token auth.
HEAD_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}


@contextlib.contextmanager
def warm_ray_head(enabled: bool):
    """``ray start --head --block`` on a free loopback port for the whole bench; yields its address (or None)."""
    if not enabled:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray_cli = Path(sys.executable).with_name("ray")
    cmd = [str(ray_cli), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--num-cpus", str(os.cpu_count() or 1), "--include-dashboard=false", "--disable-usage-stats"]
    env = {**os.environ, **HEAD_ENV}
    head = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:  # the GCS port answers once the head is up
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if head.poll() is not None or time.time() > deadline:
                sys.exit(f"ray start --head did not come up (exit {head.poll()})")
            time.sleep(0.2)
        time.sleep(2)  # the raylet registers after the GCS answers
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: stopping it stops the processes it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=30)
        record = Path(tempfile.gettempdir(), "ray", "ray_current_cluster")  # `ray stop` would remove it
        with contextlib.suppress(OSError):
            if record.read_text().strip() == address:
                record.unlink()


def service_slots(args) -> int:
    from spaces.study import load_study

    study = load_study(args.study)
    slots = int((os.cpu_count() or 1) // study.resources.cpus)
    return max(1, min(slots, study.budget.max_concurrent or slots))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default=str(REPO / "spaces" / "quickstart.yaml"))
    p.add_argument("--pairs", type=int, default=3, help="baseline/service pairs (alternating order)")
    p.add_argument("--num-samples", type=int, default=None, help="trials per search (default: the study's)")
    p.add_argument("--baseline-threads", type=int, default=1,
                   help="torch threads in the baseline (0: torch's default). 1, the strongest baseline on shared "
                   "cores: torch's default 2 threads spin-wait when other processes hold a core (bench/scaling.py: "
                   "0.26x of one thread under load)")
    p.add_argument("--b-repo", help="a third arm: the service from this checkout (before/after a change)")
    p.add_argument("--b-env", nargs="*", default=[], metavar="KEY=VALUE",
                   help="a third arm: the service with these environment variables")
    p.add_argument("--warm-ray", action="store_true",
                   help="the service connects to a Ray head started once before the pairs (ray start --head)")
    p.add_argument("--quick", action="store_true", help="one pair of 6-trial searches (a smoke test)")
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "vs_optuna.json"))
    p.add_argument("--child", choices=["baseline", "service"], help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        (baseline_child if args.child == "baseline" else service_child)(args)
        return {}
    if args.quick:
        args.pairs, args.num_samples = 1, args.num_samples or 6
    sys.path.insert(0, str(REPO / "bench"))
    arms = ["baseline", "service"] + (["service_b"] if args.b_repo or args.b_env else [])
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    with tempfile.TemporaryDirectory(prefix="vs_optuna_") as tmp, warm_ray_head(args.warm_ray) as address:
        args.ray_address = address
        for pair in range(args.pairs):
            for arm in (arms if pair % 2 == 0 else arms[::-1]):
                runs[arm].append(run_child(arm, args, Path(tmp) / f"{pair}_{arm}"))
            b = runs["baseline"][-1]
            print(f"pair {pair + 1}: " + "   ".join(
                f"{a} {runs[a][-1]['wall']:6.1f} s (best {runs[a][-1]['best']:.4f})" for a in arms)
                + "   ratio " + " ".join(f"{runs[a][-1]['wall'] / b['wall']:.3f}" for a in arms[1:]), flush=True)
    med = {k: statistics.median(r["wall"] for r in v) for k, v in runs.items()}
    pairwise = statistics.median(s["wall"] / b["wall"] for b, s in zip(runs["baseline"], runs["service"]))
    ratio = med["service"] / med["baseline"]

    def median_breakdown(kind):
        keys = runs[kind][0]["breakdown"]
        return {k: statistics.median(r["breakdown"][k] for r in runs[kind]) for k in keys}

    bd = {k: median_breakdown(k) for k in runs}
    print(f"\nbaseline (Optuna + SuccessiveHalvingPruner + MLflow, one process, {bd['baseline']['threads']:.0f} "
          f"torch threads): median {med['baseline']:.1f} s")
    print(f"service (search run, {service_slots(args)} trials at once"
          f"{', Ray head already running' if args.warm_ray else ''}): median {med['service']:.1f} s")
    print(f"ratio service / baseline: {ratio:.3f}   median per-pair ratio: {pairwise:.3f}   (target <= 0.7)")
    print("\nwhere the seconds go (medians):")
    if "service_b" in runs:
        med_b = statistics.median(r["wall"] for r in runs["service_b"])
        print(f"service_b ({args.b_repo or ''} {' '.join(args.b_env)}): median {med_b:.1f} s, "
              f"ratio to baseline {med_b / med['baseline']:.3f}, to service {med_b / med['service']:.3f}")
    for kind in arms[::-1]:
        print(f"  {kind}:")
        for k, v in bd[kind].items():
            print(f"    {k:30s} {v:8.2f}")
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "pairs": args.pairs,
              "study": str(Path(args.study).name), "num_samples": args.num_samples, "warm_ray": args.warm_ray,
              "baseline_s": med["baseline"], "service_s": med["service"], "ratio": ratio,
              "median_pairwise_ratio": pairwise, "target": 0.7,
              "best": {k: [r["best"] for r in v] for k, v in runs.items()}, "breakdown": bd}
    save_result(args.json, result)
    return result


if __name__ == "__main__":
    main()
