"""``search``: run, validate, list, show, resume and export hyperparameter searches.

Exit codes: 0 success, 1 a search ran but every trial failed (or an unexpected error), 2 invalid
input (a bad study file or argument, an unknown search name, an absent dataset, a cluster too small
for one trial); invalid input never prints a traceback and leaves nothing behind. See docs/errors.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from spaces.samplers import SAMPLERS

from . import credentials, machine, preflight
from .errors import SearchError, TrialsFailed

EXIT_FAILED = 1
EXIT_INVALID = 2


def _fail(message: str, code: int = EXIT_INVALID) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


class UsageError(Exception):
    """A command-line argument argparse refused: one line, exit 2 (not argparse's usage block)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


# ---------------------------------------------------------------- argument types: refuse at once
def _whole(minimum: int, maximum: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound} (got {value})")
        return value

    parse.__name__ = "whole number"
    return parse


positive = _whole(1)
seed = _whole(0, 2**32 - 1)  # numpy's range


def _door(check):
    """An argparse type from a ``preflight`` check (argparse names the argument, so the check's label is left empty)."""
    def parse(text: str):
        try:
            return check(text, "")
        except SearchError as e:
            raise argparse.ArgumentTypeError(str(e).lstrip(": ")) from None

    parse.__name__ = check.__name__.removeprefix("check_").replace("_", " ")
    return parse


search_name = _door(preflight.check_search_name)
output_file = _door(preflight.check_output_file)
tracking_uri = _door(preflight.check_tracking_uri)


def cmd_validate(args) -> int:
    from spaces.study import check_sampler, key_line, load_study

    study = load_study(args.study)
    problems = check_sampler(study, args.sampler or study.sampler)
    if problems:
        return _fail("\n".join(problems))
    if args.address:
        preflight.check_address(args.address)
        have, where = machine.cluster_resources(args.address), f"the cluster at {args.address}"
    else:
        have, where = machine.local_resources(), "this machine"
    need = study.resources
    try:
        machine.check_fits(need.cpus, need.gpus, have, where, lambda key: key_line(args.study, key))
        misfit = None
    except SearchError as e:
        if args.address:  # the user named where it will run: not fitting there is the answer
            raise
        misfit = str(e)  # a valid study for a cluster: said, not refused (`search run` here refuses it)
    n = f"{study.grid_size()} grid points" if all(p.is_discrete() for p in study.search.values()) else "continuous"
    print(f"{args.study}: valid — study '{study.name}', family {study.family}, dataset {study.dataset}, "
          f"{len(study.search)} searched parameter(s) ({n}), {len(study.fixed)} fixed, "
          f"objective {study.objective.mode} {study.objective.metric}")
    print(f"resources: a trial needs {need.cpus:g} CPU and {need.gpus:g} GPU; checked against {where} "
          f"({machine.describe(have)})" + ("" if args.address else "; use --address to check a cluster instead"))
    if misfit:
        print(f"does not fit {where} (`search run` here refuses it; run it on a cluster):\n{misfit}", file=sys.stderr)
    return 0


def cmd_run(args) -> int:
    from .overrides import parse_overrides
    from .runner import start_search

    outcome = start_search(args.study, num_samples=args.num_samples, max_concurrent=args.max_concurrent,
                           sampler=args.sampler, tracking_uri=args.tracking_uri, address=args.address,
                           name=args.name, runs_dir=args.runs_dir, storage=args.storage, quiet=args.quiet,
                           overrides=parse_overrides(args.overrides))
    _report(outcome, args.top)
    return 0


def cmd_resume(args) -> int:
    from .runner import resume_search

    outcome = resume_search(args.name, runs_dir=args.runs_dir, address=args.address, quiet=args.quiet,
                            storage=args.storage, tracking_uri=args.tracking_uri)
    _report(outcome, args.top)
    return 0


def _report(outcome, top: int) -> None:
    from .queries import render

    print(f"\nsearch '{outcome.name}' finished in {outcome.seconds:.1f} s")
    print(render(outcome.table, top))  # read back from MLflow: the same text as `search show`
    if outcome.best_yaml is not None:
        best, attrs = outcome.table.iloc[0], outcome.table.attrs
        print(f"\nbest: trial {best['trial']}, {attrs['target']} {best[attrs['shown_column']]:.4f} at epoch "
              f"{best['best_epoch']} (its weights: artifact best_model); configuration written to {outcome.best_yaml}")
    else:
        print("\nno trial holds a score (all failed or diverged): no best configuration")
    print(ui_hint(outcome.tracking_uri, outcome.table.attrs["experiment_id"], outcome.parent_run_id))


def ui_hint(uri: str, experiment_id: str, parent_run_id: str) -> str:
    """Where to look: the search's run on a server, or the command that serves a local store and the page."""
    from records.schema import ui_url

    if uri.startswith(("http://", "https://")):
        return (f"MLflow: open {ui_url(credentials.redacted(uri), experiment_id, parent_run_id)} "
                "(on a cluster head: forward the port first, e.g. `ray attach cluster.yaml -p 5000`)")
    uri = credentials.redacted(uri)
    return (f"MLflow: {uri} (parent run {parent_run_id}). Open the UI with:\n"
            f"  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000\n"
            f"  then {ui_url('http://127.0.0.1:5000', experiment_id, parent_run_id)}")


def cmd_ls(args) -> int:
    from .queries import list_searches

    table = list_searches(args.tracking_uri)
    if table.empty:
        print("no searches recorded yet (run one with `search run spaces/quickstart.yaml`)")
    else:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def cmd_show(args) -> int:
    from records.schema import tracking_uri

    from .queries import render, trials_table

    table = trials_table(args.name, args.tracking_uri)
    print(render(table, args.top))
    print(ui_hint(tracking_uri(args.tracking_uri), table.attrs["experiment_id"], table.attrs["parent_run_id"]))
    return 0


def cmd_export(args) -> int:
    from .queries import export_best

    path = export_best(args.name, args.out, args.tracking_uri)
    print(f"best configuration of '{args.name}' written to {path}")
    return 0


def cmd_report(args) -> int:
    # umap-learn's numba kernels compile once per machine, not once per report (set before numba is imported)
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.expanduser("~/.cache/robust-search/numba"))
    import records
    from analysis.report import build  # the CLI is the one place where search meets analysis

    try:
        path = build(args.name, args.tracking_uri, args.out, top=args.top, umap_points=args.umap_points,
                     best_model=not args.no_best_model, log_to_mlflow=not args.no_mlflow)
    except records.RecordError as e:
        return _fail(str(e))
    print(path)
    return 0


def cmd_suite(args) -> int:
    import records
    from spaces.study import StudyError

    try:
        if args.action == "run":
            from .suite import run_suite

            run_suite(args.name, tracking_uri=args.tracking_uri, runs_dir=args.runs_dir, address=args.address,
                      quiet=args.quiet)
        from analysis.suite import build
        from spaces.suite import load_suite

        print(build(load_suite(args.name), args.tracking_uri, args.out))
    except (StudyError, records.RecordError) as e:
        return _fail(str(e))
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import reproduce

    reproduce(args.best, seeds=args.seeds, epochs=args.epochs, tracking_uri=args.tracking_uri,
              address=args.address, runs_dir=args.runs_dir, quiet=args.quiet, storage=args.storage)
    return 0


def storage_arg(sp, text: str = "") -> None:
    sp.add_argument("--storage", help=text or "Ray Tune trial storage: a shared folder or a URI such as "
                    "s3://bucket/runs (needed on multi-node clusters and under `ray job submit`; default: the runs dir)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="search", description="Hyperparameter searches on Ray Tune, recorded in MLflow.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, tracking=True, ray=False):
        if tracking:
            sp.add_argument("--tracking-uri", type=tracking_uri, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                            "sqlite:///mlflow.db)")
        if ray:
            sp.add_argument("--address", help="join a running Ray cluster ('auto' for the local head)")
            sp.add_argument("--runs-dir", default="runs", help="where Ray keeps trial state (default: runs/)")
            sp.add_argument("--quiet", action="store_true", help="no live progress line")
            sp.add_argument("--top", type=positive, default=5, help="rows of the final table (default 5)")

    r = sub.add_parser("run", help="run every trial of a study file")
    r.add_argument("study")
    r.add_argument("overrides", nargs="*", metavar="KEY.PATH=VALUE",
                   help="study settings without editing the file, e.g. budget.max_epochs=2 search.lr.high=0.1 "
                        "(validated like the file, recorded on the parent run)")
    r.add_argument("--num-samples", type=positive, help="trials to run (default: the study's budget)")
    r.add_argument("--max-concurrent", type=positive, help="trials running at once (default: as many as fit)")
    r.add_argument("--sampler", choices=SAMPLERS, help="default: the study's `sampler:` (tpe)")
    r.add_argument("--name", type=search_name, help="search name (default: STUDY-DATE-TIME)")
    storage_arg(r)
    common(r, ray=True)
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check a study file without running anything")
    v.add_argument("study")
    v.add_argument("--sampler", choices=SAMPLERS, help="default: the study's `sampler:` (tpe)")
    v.add_argument("--address", help="check the resources against this Ray cluster (default: this machine)")
    v.set_defaults(func=cmd_validate)

    ls = sub.add_parser("ls", help="list searches and their status")
    common(ls)
    ls.set_defaults(func=cmd_ls)

    s = sub.add_parser("show", help="top trials of a search")
    s.add_argument("name", type=search_name)
    s.add_argument("--top", type=positive, default=10)
    common(s)
    s.set_defaults(func=cmd_show)

    rs = sub.add_parser("resume", help="continue an interrupted search")
    rs.add_argument("name", type=search_name)
    storage_arg(rs, "where the search kept its trial state (default: as recorded by `search run`)")
    common(rs, ray=True)
    rs.set_defaults(func=cmd_resume)

    e = sub.add_parser("export", help="write the best configuration of a search as YAML")
    e.add_argument("name", type=search_name)
    e.add_argument("--out", type=output_file, default="best.yaml")
    common(e)
    e.set_defaults(func=cmd_export)

    rep = sub.add_parser("report", help="a Markdown report of a search: tables, plots, best model, reproductions")
    rep.add_argument("name", help="the search name (`search ls` lists them)")
    rep.add_argument("--out", default=None, help="output folder (default: reports/NAME)")
    rep.add_argument("--top", type=positive, default=10, help="rows of the best-trials table")
    rep.add_argument("--umap-points", type=positive, default=2000, help="test samples in the UMAP projection")
    rep.add_argument("--no-best-model", action="store_true", help="skip UMAP and calibration of the best model")
    rep.add_argument("--no-mlflow", action="store_true", help="do not log the report to the search's MLflow run")
    common(rep)
    rep.set_defaults(func=cmd_report)

    su = sub.add_parser("suite", help="a seed's studies (spaces/suites/NAME.yaml): run them, report claim by claim")
    su.add_argument("action", choices=("run", "report"), help="run: run (resume, skip) every study, then report")
    su.add_argument("name", help="the suite (spaces/suites/NAME.yaml)")
    su.add_argument("--out", default=None, help="report folder (default: docs/replications)")
    common(su, ray=True)
    su.set_defaults(func=cmd_suite)

    rp = sub.add_parser("reproduce", help="re-run an exported configuration at full budget on several seeds")
    rp.add_argument("best", help="a YAML written by `search export`")
    rp.add_argument("--seeds", type=seed, nargs="+", help="seeds (default: the study's reproduce.seeds)")
    rp.add_argument("--epochs", type=positive, help="epochs (default: the study's reproduce.epochs or the search's)")
    storage_arg(rp)
    common(rp, ray=True)
    rp.set_defaults(func=cmd_reproduce)
    return p


# Bad input, by the module that raises it: (module, exception class name).
USER_ERRORS = (("spaces.study", "StudyError"), ("records.schema", "StoreNotFound"), ("records.reader", "StoreError"),
               ("trainables.core.data", "DatasetNotFound"), ("trainables.core.trainer", "CheckpointError"))
CONFIG_ERROR = ("trainables.core.config", "ConfigError")


def loaded(*names: tuple[str, str]) -> tuple[type, ...]:
    """The exception classes among ``names`` whose modules this command imported. A command imports only what it
    uses (``search --help`` and ``ls`` no torch): an exception of a module never imported cannot have been raised."""
    return tuple(getattr(sys.modules[m], c) for m, c in names if m in sys.modules)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(build_parser(), argv)
        _check_environment(args)
    except (UsageError, SearchError) as e:
        return _fail(str(e))
    if args.command in ("run", "resume", "reproduce"):
        from .cluster import quiet_libraries

        quiet_libraries()  # process-wide settings belong to the program, not to the library calls below
    try:
        return args.func(args)
    except SearchError as e:
        return _fail(str(e))
    except TrialsFailed as e:
        return _fail(str(e), EXIT_FAILED)
    except Exception as e:
        if isinstance(e, loaded(CONFIG_ERROR)):
            return _fail(str(e).replace("\n  - ", "\n  "))
        if isinstance(e, loaded(*USER_ERRORS)):
            return _fail(str(e))
        raise
    except KeyboardInterrupt as e:
        name = e.args[0] if e.args else "NAME"
        print(f"\ninterrupted: nothing is lost; continue with `search resume {name}`", file=sys.stderr)
        return 130


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None):
    """``parse_args``, where the study overrides of ``run`` may also follow its options (argparse takes
    positionals in one run: ``run s.yaml --name x budget.max_epochs=2`` would leave the override over)."""
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        args.overrides += [x for x in extra if not x.startswith("-")]
        extra = [x for x in extra if x.startswith("-")]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _check_environment(args) -> None:
    """The tracking store, before anything else: $MLFLOW_TRACKING_URI (or the default store) stands in for
    --tracking-uri, with the same check naming it; a password moves out of the URI into the variable its client
    library reads (``credentials``), so that nothing below writes or prints it; a database or server that does
    not answer within seconds is said so here."""
    if not hasattr(args, "tracking_uri"):
        return
    from records import DEFAULT_TRACKING_URI  # every command with a tracking URI reads the records

    env = os.environ.get("MLFLOW_TRACKING_URI")
    what = "--tracking-uri" if args.tracking_uri else "MLFLOW_TRACKING_URI" if env else "the default tracking URI"
    uri = args.tracking_uri or preflight.check_tracking_uri(env or DEFAULT_TRACKING_URI, what)
    if args.tracking_uri:  # left unset otherwise: `resume` and `reproduce` then use the store the search recorded
        args.tracking_uri = credentials.adopt_password(uri, what)
    if env:  # what this process reads without --tracking-uri, and Ray's workers and jobs inherit
        os.environ["MLFLOW_TRACKING_URI"] = credentials.adopt_password(env, "MLFLOW_TRACKING_URI")
    preflight.probe_store(credentials.without_password(uri), what)
    if what == "--tracking-uri" and credentials.password_of(uri) is not None:
        print(f"note: the password in --tracking-uri can be read with `ps` while this runs; leave it out of the URI "
              f"and set {credentials.password_variable(uri)}", file=sys.stderr)


def exit_now(code: int):
    """Stop Ray, flush, and leave without the interpreter's teardown.

    By then every record is written (Tune's state synchronously; the MLflow writer is flushed when Tune
    stops, and again in ``runner._fit`` if Tune was cut short); the teardown of torch,
    Ray, MLflow and pandas modules only costs time: 2-4 s after a search (docs/performance.md).
    """
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def entry() -> None:
    """The ``search`` console command: ``main``, then a fast exit."""
    exit_now(main())


if __name__ == "__main__":
    entry()
