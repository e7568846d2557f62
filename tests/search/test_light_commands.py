"""Read-only commands import only what they use (issue 17 §5): each runs in a fresh process and reports
which heavy packages it loaded. ``bench/cli_startup.py`` measures their time against ``import pandas``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "spaces" / "quickstart.yaml"
HEAVY = ("torch", "ray", "mlflow", "optuna", "pandas")

# Runs the CLI's main in this process, then prints which heavy packages it imported (and its exit code).
PROBE = """
import json, sys
from search.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "loaded": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def loaded_by(*argv: str, cwd: Path = ROOT) -> tuple[int, set[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd)})
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["code"], set(out["loaded"])


def test_help_imports_nothing_heavy():
    code, loaded = loaded_by("--help")
    assert code == 0 and loaded == set()
    code, loaded = loaded_by("run", "--help")
    assert code == 0 and loaded == set()


def test_validate_imports_nothing_heavy():
    code, loaded = loaded_by("validate", str(QUICK))
    # the study's keys are checked against the registries' catalog (trainables/core/catalog.py), not their torch builders
    assert code == 0 and loaded == set(), loaded


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A finished two-trial search, written by the real writers (no Ray cluster): the bench's store."""
    sys.path.insert(0, str(ROOT / "bench"))
    from cli_startup import make_store

    tmp = tmp_path_factory.mktemp("light")
    return tmp, make_store(tmp, "light-1")


@pytest.mark.parametrize("argv", [["ls"], ["show", "light-1"], ["export", "light-1", "--out", "best.yaml"]],
                         ids=["ls", "show", "export"])
def test_read_commands_read_the_store_without_mlflow_ray_or_torch(store, argv):
    """``import mlflow`` alone costs several times the whole budget: the store is read by ``records.reader``."""
    tmp, uri = store
    code, loaded = loaded_by(*argv, "--tracking-uri", uri, cwd=tmp)
    assert code == 0
    assert loaded == {"pandas"}, loaded


@pytest.mark.parametrize("argv", [["ls"], ["show", "x"], ["export", "x", "--out", "best.yaml"]],
                         ids=["ls", "show", "export"])
def test_a_missing_sqlite_store_is_one_line_and_stays_missing(tmp_path, argv):
    missing = tmp_path / "absent.db"
    proc = subprocess.run([sys.executable, "-m", "search", *argv, "--tracking-uri", f"sqlite:///{missing}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "no MLflow store at" in proc.stderr, proc.stderr
    assert not missing.exists() and not (tmp_path / "best.yaml").exists()


def test_ls_imports_mlflow_only_to_mark_a_lost_driver(tmp_path):
    """The heartbeats are read without MLflow; its client is made only for the one write, a search whose driver
    stopped beating marked "driver lost"."""
    import time

    from records import schema, writer
    from records.states import SearchState
    from search import driver

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = writer.client_for(uri)
    exp = writer.experiment_id(client, "beats")

    def parent(name: str, beat: float) -> str:
        return client.create_run(exp, run_name=name, tags={schema.ROLE: "search", schema.SEARCH: name,
                                                           schema.STATE: SearchState.RUNNING.value,
                                                           driver.HEARTBEAT: str(int(beat))}).info.run_id

    parent("alive", time.time())
    assert loaded_by("ls", "--tracking-uri", uri, cwd=tmp_path) == (0, {"pandas"})
    dead = parent("dead", time.time() - 10 * driver.LOST_AFTER_S)
    code, loaded = loaded_by("ls", "--tracking-uri", uri, cwd=tmp_path)
    assert code == 0 and "mlflow" in loaded and not loaded & {"torch", "ray"}
    assert client.get_run(dead).data.tags[schema.STATE] == SearchState.DRIVER_LOST
    assert loaded_by("ls", "--tracking-uri", uri, cwd=tmp_path) == (0, {"pandas"})  # settled once


def test_a_file_that_holds_no_store_is_one_line_and_stays_as_it_was(tmp_path):
    """An empty sqlite file is read, not made into a store (MLflow's client created its tables in it)."""
    empty = tmp_path / "empty.db"
    empty.touch()
    proc = subprocess.run([sys.executable, "-m", "search", "ls", "--tracking-uri", f"sqlite:///{empty}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "cannot read the MLflow store" in proc.stderr and "no such table" in proc.stderr
    assert empty.stat().st_size == 0
