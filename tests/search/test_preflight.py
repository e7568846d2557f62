"""Every door checked: bad input anywhere is exit 2, one clear message, no traceback, nothing written, at once.

Each case is one malformed input at one door (study files, best.yaml, command-line arguments, search
names, tracking URIs, data dirs, runs dirs, checkpoints). Most call ``search.cli.main`` in-process; a
few go through the installed ``search`` console script. Files too odd to keep in git (huge, a folder,
a device) are made per test; the others live in tests/malformed_inputs/.
"""

from __future__ import annotations

import gzip
import os
import resource
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from search.cli import main

ROOT = Path(__file__).resolve().parents[2]
IN = Path(__file__).resolve().parents[1] / "malformed_inputs"
QUICK = ROOT / "spaces" / "quickstart.yaml"
SECONDS = 10.0  # every refusal is immediate; the slowest (an absent dataset) must still beat this


# ---------------------------------------------------------------- file makers (per test, in tmp)
def _huge(tmp: Path) -> Path:
    p = tmp / "huge.yaml"
    p.write_text("name: huge\nfamily: optimization\ndataset: digits\n" + "# padding\n" * 120_000)
    return p


def _deep(tmp: Path) -> Path:
    p = tmp / "deep.yaml"
    p.write_text("name: deep\nfixed: " + "[" * 200_000 + "]" * 200_000 + "\n")
    return p


def _folder(tmp: Path) -> Path:
    (tmp / "a_folder.yaml").mkdir()
    return tmp / "a_folder.yaml"


def _a_file(tmp: Path) -> Path:
    p = tmp / "plain_file"
    p.write_text("not a folder\n")
    return p


def _idx(path: Path, dims: tuple[int, ...], body: bytes | None = None, magic: bytes = b"\x00\x00\x08") -> None:
    header = magic + bytes([len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    n = 1
    for d in dims:
        n *= d
    with gzip.open(path, "wb") as f:
        f.write(header + (body if body is not None else bytes(n)))


def _fmnist_study(tmp: Path, data: Path) -> Path:
    p = tmp / "fm.yaml"
    p.write_text((IN / "study_mnist_absent.yaml").read_text().replace("dataset: mnist", "dataset: fashion_mnist")
                 .replace("DATA_DIR", str(data)).replace("mnist_absent", "fm_bad"))
    return p


def _fmnist_files(tmp: Path, *, images=(20, 28, 28), labels=(20,), bad: str | None = None) -> Path:
    """A Fashion-MNIST folder of four tiny IDX files, one of them broken as ``bad`` says."""
    d = tmp / "fmnist"
    d.mkdir()
    for split in ("train", "t10k"):
        _idx(d / f"{split}-images-idx3-ubyte.gz", images)
        _idx(d / f"{split}-labels-idx1-ubyte.gz", labels)
    target = d / "train-images-idx3-ubyte.gz"
    if bad == "garbage":
        target.write_bytes(b"this is not gzip at all")
    elif bad == "truncated_gzip":
        target.write_bytes(target.read_bytes()[:30])
    elif bad == "truncated_idx":
        _idx(target, images, body=bytes(100))
    elif bad == "magic":
        _idx(target, images, magic=b"\x01\x02\x08")
    return d


def _eval_target_absent(tmp: Path) -> Path:
    """Digits present (it ships with scikit-learn), the cross-domain target's MNIST absent."""
    p = tmp / "xdomain_absent.yaml"
    p.write_text((IN / "study_mnist_absent.yaml").read_text().replace("dataset: mnist", "dataset: digits")
                 .replace("data_dir: DATA_DIR", f"data_dir: {tmp / 'no_data_here'}, eval_datasets: [mnist:rotate@3]"))
    return p


def _mnist_absent(tmp: Path) -> Path:
    p = tmp / "mnist_absent.yaml"
    p.write_text((IN / "study_mnist_absent.yaml").read_text().replace("DATA_DIR", str(tmp / "no_data_here")))
    return p


def _store(tmp: Path) -> str:
    """An MLflow store that exists (and holds no searches)."""
    from records import writer

    uri = f"sqlite:///{tmp / 'store.db'}"
    writer.client_for(uri).search_experiments()
    return uri


# ---------------------------------------------------------------- the corpus: (id, argv(tmp), fragment)
def _q(*extra):
    return lambda t: ["run", str(QUICK), *extra]


CASES = [
    # study files: how a file can be unreadable
    ("study_billion_laughs", lambda t: ["validate", str(IN / "study_billion_laughs.yaml")], "YAML aliases (*a0)"),
    ("study_billion_laughs_run", lambda t: ["run", str(IN / "study_billion_laughs.yaml")], "are not accepted"),
    ("study_merge_alias", lambda t: ["validate", str(IN / "study_merge_alias.yaml")], "line 6): YAML aliases (*base)"),
    ("study_latin1", lambda t: ["validate", str(IN / "study_latin1.yaml")], "(line 3): not UTF-8 text"),
    ("study_utf16", lambda t: ["validate", str(IN / "study_utf16.yaml")], "not UTF-8 text (byte 0xff"),
    ("study_nul_byte", lambda t: ["validate", str(IN / "study_nul_byte.yaml")],
     "(line 3): not valid YAML: unacceptable character #x0000"),
    ("study_python_tag", lambda t: ["validate", str(IN / "study_python_tag.yaml")], "(line 1): not valid YAML"),
    ("study_tab_indent", lambda t: ["validate", str(IN / "study_tab_indent.yaml")], "(line 5): not valid YAML"),
    ("study_unclosed_bracket", lambda t: ["validate", str(IN / "study_unclosed_bracket.yaml")], "(line 4)"),
    ("study_grid_continuous", lambda t: ["run", str(IN / "study_grid_continuous.yaml")], "grid sampler needs"),
    ("study_absent", lambda t: ["run", str(t / "nope.yaml")], "no such study file"),
    ("study_is_folder", lambda t: ["validate", str(_folder(t))], "is a directory, not a study file"),
    ("study_is_device", lambda t: ["validate", "/dev/zero"], "is not a regular file"),
    ("study_huge", lambda t: ["validate", str(_huge(t))], "a study file is at most 1 MiB"),
    ("study_deeply_nested", lambda t: ["validate", str(_deep(t))], "nested too deeply"),
    # data: absent, corrupt, a file where a folder belongs
    ("data_mnist_absent", lambda t: ["run", str(_mnist_absent(t))], "dataset 'mnist' not found"),
    ("data_eval_target_absent", lambda t: ["run", str(_eval_target_absent(t))],
     "fixed.eval_datasets (mnist:rotate@3): dataset 'mnist' not found"),
    ("data_dir_is_file", lambda t: ["run", str(_fmnist_study(t, _a_file(t)))], "fixed.data_dir: "),
    ("data_not_gzip", lambda t: ["run", str(_fmnist_study(t, _fmnist_files(t, bad="garbage")))], "BadGzipFile"),
    ("data_truncated_gzip", lambda t: ["run", str(_fmnist_study(t, _fmnist_files(t, bad="truncated_gzip")))],
     "train-images-idx3-ubyte.gz cannot be read"),
    ("data_truncated_idx", lambda t: ["run", str(_fmnist_study(t, _fmnist_files(t, bad="truncated_idx")))],
     "(truncated?)"),
    ("data_bad_magic", lambda t: ["run", str(_fmnist_study(t, _fmnist_files(t, bad="magic")))], "bad magic number"),
    ("data_label_count", lambda t: ["run", str(_fmnist_study(t, _fmnist_files(t, labels=(19,))))],
     "holds 19 labels for the 20 images"),
    ("data_images_not_3d", lambda t: ["run", str(_fmnist_study(t, _fmnist_files(t, images=(20, 784))))],
     "wrong shape"),
    # command-line numbers and choices
    ("arg_num_samples_negative", _q("--num-samples", "-1"), "--num-samples: must be >= 1 (got -1)"),
    ("arg_num_samples_zero", _q("--num-samples", "0"), "--num-samples: must be >= 1 (got 0)"),
    ("arg_num_samples_text", _q("--num-samples", "many"), "expected a whole number, got 'many'"),
    ("arg_num_samples_float", _q("--num-samples", "2.5"), "expected a whole number, got '2.5'"),
    ("arg_max_concurrent_zero", _q("--max-concurrent", "0"), "--max-concurrent: must be >= 1"),
    ("arg_top_zero", _q("--top", "0"), "--top: must be >= 1"),
    ("arg_show_top_negative", lambda t: ["show", "x", "--top", "-3"], "--top: must be >= 1 (got -3)"),
    ("arg_seed_negative", lambda t: ["reproduce", str(IN / "best_valid.yaml"), "--seeds", "0", "-2"],
     "--seeds: must be between 0 and 4294967295 (got -2)"),
    ("arg_seed_huge", lambda t: ["reproduce", str(IN / "best_valid.yaml"), "--seeds", str(2**40)], "--seeds"),
    ("arg_epochs_zero", lambda t: ["reproduce", str(IN / "best_valid.yaml"), "--epochs", "0"], "--epochs: must be"),
    ("arg_sampler_unknown", _q("--sampler", "bayes"), "argument --sampler: invalid choice: 'bayes'"),
    ("arg_unknown_command", lambda t: ["frobnicate"], "invalid choice: 'frobnicate'"),
    ("arg_missing_study", lambda t: ["run"], "the following arguments are required: study"),
    ("arg_unknown_flag", _q("--fast"), "unrecognized arguments: --fast"),
    # search names
    ("name_slash", _q("--name", "a/b"), "'a/b': use letters, digits"),
    ("name_dotdot", _q("--name", "x..y"), "'x..y': use letters"),
    ("name_dot_start", _q("--name", ".hidden"), "'.hidden'"),
    ("name_space", _q("--name", "my search"), "'my search'"),
    ("name_quote", _q("--name", "it's"), "use letters, digits"),
    ("name_too_long", _q("--name", "n" * 200), "200 characters is too long"),
    ("name_empty", _q("--name", ""), "empty"),
    ("name_exists", lambda t: ((t / "runs" / "taken").mkdir(parents=True), _q("--name", "taken")(t))[1],
     "a search named 'taken' already exists"),
    ("show_bad_name", lambda t: ["show", "../x"], "argument name: '../x'"),
    ("show_unknown_name", lambda t: ["show", "nobody", "--tracking-uri", _store(t)], "no search named 'nobody'"),
    ("export_unknown_name", lambda t: ["export", "nobody", "--tracking-uri", _store(t), "--out", str(t / "b.yaml")],
     "no search named 'nobody'"),
    ("export_out_is_folder", lambda t: ["export", "x", "--out", str(t)], "is a directory; give a file name"),
    ("export_out_no_folder", lambda t: ["export", "x", "--out", str(t / "absent" / "b.yaml")], "does not exist"),
    ("resume_unknown_name", lambda t: ["resume", "nobody", "--runs-dir", str(t / "runs")], "no search named 'nobody'"),
    ("resume_bad_name", lambda t: ["resume", "a/../../etc"], "argument name"),
    ("resume_broken_meta", lambda t: ((t / "runs" / "broken").mkdir(parents=True),
                                      (t / "runs" / "broken" / "search.json").write_text("{not json"),
                                      ["resume", "broken", "--runs-dir", str(t / "runs")])[2], "search.json: unreadable"),
    # tracking URIs
    ("uri_unknown_scheme", _q("--tracking-uri", "foo://bar"), "unsupported scheme 'foo://'"),
    ("uri_no_scheme", _q("--tracking-uri", "mlruns"), "'mlruns' has no scheme"),
    ("uri_sqlite_no_file", _q("--tracking-uri", "sqlite://"), "names no database file"),
    ("uri_http_no_host", lambda t: ["ls", "--tracking-uri", "http://"], "names no host"),
    ("uri_bad_port", lambda t: ["ls", "--tracking-uri", "http://localhost:port"], "has an invalid port"),
    ("uri_sqlite_is_folder", lambda t: ["ls", "--tracking-uri", f"sqlite:///{t}"], "is a directory, not a database"),
    ("uri_sqlite_not_db", lambda t: ["ls", "--tracking-uri", f"sqlite:///{_a_file(t)}"], "is not an SQLite database"),
    ("uri_sqlite_under_file", lambda t: _q("--tracking-uri", f"sqlite:///{_a_file(t)}/m.db")(t), "is a file, not a folder"),
    ("uri_sqlite_no_folder", lambda t: _q("--tracking-uri", f"sqlite:///{t}/absent/m.db")(t), "does not exist"),
    ("uri_env_bad", lambda t: (os.environ.__setitem__("MLFLOW_TRACKING_URI", "ftp://x"), ["ls"])[1],
     "MLFLOW_TRACKING_URI: unsupported scheme 'ftp://'"),
    ("uri_store_absent", lambda t: ["ls", "--tracking-uri", f"sqlite:///{t}/none.db"], "no MLflow store at"),
    # runs and storage folders
    ("runs_dir_is_file", lambda t: _q("--runs-dir", str(_a_file(t)))(t), "--runs-dir: "),
    ("runs_dir_under_file", lambda t: _q("--runs-dir", str(_a_file(t) / "runs"))(t), "is a file, not a folder"),
    ("storage_is_file", lambda t: _q("--storage", str(_a_file(t)))(t), "--storage: "),
    # Ray addresses (where nothing listens, ray.init retries for minutes)
    ("address_nobody_listens", _q("--address", "127.0.0.1:1"), "no Ray cluster answers at 127.0.0.1:1"),
    ("address_malformed", _q("--address", "http://head"), "is not a Ray address"),
    ("address_bad_port", lambda t: ["reproduce", str(IN / "best_valid.yaml"), "--address", "head:99999"],
     "is not a Ray address"),
    # best.yaml for `search reproduce`
    ("best_syntax_error", lambda t: ["reproduce", str(IN / "best_syntax_error.yaml")], "(line 8): not valid YAML"),
    ("best_list", lambda t: ["reproduce", str(IN / "best_list.yaml")], "(got a list)"),
    ("best_empty", lambda t: ["reproduce", str(IN / "best_empty.yaml")], "(got an empty file)"),
    ("best_no_config", lambda t: ["reproduce", str(IN / "best_no_config.yaml")], "required key 'config' is missing"),
    ("best_no_family", lambda t: ["reproduce", str(IN / "best_no_family.yaml")], "required key 'family' is missing"),
    ("best_unknown_family", lambda t: ["reproduce", str(IN / "best_unknown_family.yaml")],
     "family (line 2): unknown family 'alchemy'"),
    ("best_config_not_mapping", lambda t: ["reproduce", str(IN / "best_config_not_mapping.yaml")],
     "config (line 6): a mapping"),
    ("best_bad_lr", lambda t: ["reproduce", str(IN / "best_bad_lr.yaml")], "config.lr (line 10)"),
    ("best_unknown_key", lambda t: ["reproduce", str(IN / "best_unknown_key.yaml")], "config.learning_rat (line 11)"),
    ("best_bad_seeds", lambda t: ["reproduce", str(IN / "best_bad_seeds.yaml")], "reproduce.seeds (line 12)"),
    ("best_alias", lambda t: ["reproduce", str(IN / "best_alias.yaml")], "(line 4): YAML aliases (*s)"),
    ("best_latin1", lambda t: ["reproduce", str(IN / "best_latin1.yaml")], "(line 1): not UTF-8 text"),
    ("best_absent", lambda t: ["reproduce", str(t / "best.yaml")], "no such file"),
    ("best_is_folder", lambda t: ["reproduce", str(_folder(t))], "is a directory, not a exported configuration"),
]


@pytest.fixture(scope="module", autouse=True)
def warm_imports():
    """Import what the commands import once, so each case's time bound measures the refusal, not imports."""
    import mlflow  # noqa: F401

    import search.reproduce  # noqa: F401
    import search.runner  # noqa: F401


@pytest.fixture
def restore_environ():
    """The CLI's main sets environment variables (quiet_libraries) on purpose: undo them after the test.

    (Replacing os.environ by a dict would hide the variables Ray's subprocesses need.)
    """
    saved = dict(os.environ)
    yield
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    os.environ.update(saved)


def test_the_corpus_covers_every_door():
    assert len(CASES) >= 50
    doors = {case[0].split("_")[0] for case in CASES}
    assert {"study", "data", "arg", "name", "uri", "runs", "best", "show", "resume", "address"} <= doors
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("make_argv,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_at_once(make_argv, fragment, tmp_path, monkeypatch, capsys, restore_environ):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = make_argv(tmp_path)
    capsys.readouterr()  # what making the inputs printed (MLflow creating a store) is not the refusal
    before = {p for p in tmp_path.rglob("*")}
    t0, c0 = time.monotonic(), time.process_time()
    code = main(argv)
    seconds, cpu = time.monotonic() - t0, time.process_time() - c0
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert fragment in err, err
    assert err.startswith("error: ") and "Traceback" not in out + err
    assert cpu < SECONDS and seconds < 6 * SECONDS  # CPU time: the neighbours on a shared machine cost wall time
    # nothing half-written: no runs folder, no MLflow store, no parent run
    assert {p for p in tmp_path.rglob("*")} == before


# ---------------------------------------------------------------- checkpoints (a library door: load_model)
def _checkpoint(tmp: Path) -> Path:
    from trainables.core import TrainConfig, Trainer

    trainer = Trainer(TrainConfig.from_dict({"dataset": "digits", "filters": [4], "epochs": 1, "device": "cpu",
                                             "max_train_samples": 64}))
    return trainer.save_checkpoint(tmp / "good.pt")


def _ckpt_truncated(t):
    good = _checkpoint(t).read_bytes()
    (t / "c.pt").write_bytes(good[: len(good) // 2])
    return t / "c.pt"


def _ckpt_bytes(data: bytes):
    def make(t):
        (t / "c.pt").write_bytes(data)
        return t / "c.pt"

    return make


def _ckpt_saved(obj):
    def make(t):
        torch.save(obj(t) if callable(obj) else obj, t / "c.pt")
        return t / "c.pt"

    return make


def _ckpt_other_model(t):
    state = torch.load(_checkpoint(t), weights_only=True)
    state["config"] = {**state["config"], "filters": [6]}
    torch.save(state, t / "c.pt")
    return t / "c.pt"


class _NotWeights:
    pass


CHECKPOINTS = [
    ("truncated", _ckpt_truncated, "is unreadable (truncated"),
    ("garbage", _ckpt_bytes(b"garbage, not a checkpoint"), "is unreadable"),
    ("empty", _ckpt_bytes(b""), "is unreadable"),
    ("pickled_code", _ckpt_saved(_NotWeights()), "is unreadable"),
    ("no_config", _ckpt_saved({"model": {}}), "lacks config, epoch"),
    ("not_a_dict", _ckpt_saved([1, 2, 3]), "holds a list, not a dict of tensors"),
    ("absent", lambda t: t / "none.pt", "no such file"),
    ("folder", lambda t: t, "is a directory"),
    ("other_model", _ckpt_other_model, "do not fit the model"),
]


@pytest.mark.parametrize("make,fragment", [c[1:] for c in CHECKPOINTS], ids=[c[0] for c in CHECKPOINTS])
def test_bad_checkpoint_is_one_clear_error(make, fragment, tmp_path):
    from trainables.core import CheckpointError, load_model

    path = make(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_resume_from_a_bad_checkpoint_is_one_clear_error(tmp_path):
    from trainables.core import CheckpointError, train

    bad = _ckpt_bytes(b"\x00" * 10)(tmp_path)
    with pytest.raises(CheckpointError, match="is unreadable"):
        train({"dataset": "digits", "filters": [4], "epochs": 1, "device": "cpu"}, resume_from=bad)


# ---------------------------------------------------------------- unreadable files (not as root)
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_study_file(tmp_path, capsys):
    p = tmp_path / "locked.yaml"
    p.write_text(QUICK.read_text())
    p.chmod(0)
    assert main(["validate", str(p)]) == 2
    assert "cannot read" in capsys.readouterr().err


# ---------------------------------------------------------------- through the real console script
def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("search")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "search.cli"]


def _run_script(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run the console script; returns the process and the CPU seconds it used (wall time on a shared
    2-core machine measures the neighbours; a hang or a Ray start shows in either)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(_console_script() + args, capture_output=True, text=True, timeout=90, cwd=cwd, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.mark.parametrize("args,fragment", [
    pytest.param(["run", str(QUICK), "--num-samples", "-1"], "--num-samples: must be >= 1", id="num_samples"),
    pytest.param(["validate", str(IN / "study_billion_laughs.yaml")], "YAML aliases", id="billion_laughs",
                 marks=pytest.mark.slow),
    pytest.param(["reproduce", str(IN / "best_syntax_error.yaml")], "(line 8)", id="best_syntax", marks=pytest.mark.slow),
    pytest.param(["run", "MNIST"], "no such study file", id="absent_study", marks=pytest.mark.slow),
])
def test_console_script_refuses(args, fragment, tmp_path):
    proc, cpu = _run_script(args, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert cpu < SECONDS
    assert list(tmp_path.iterdir()) == []


def test_absent_dataset_is_refused_before_ray_starts(tmp_path):
    """The issue's case: `search run` on a study whose dataset is absent, in a fresh process, in < 10 s."""
    study = _mnist_absent(tmp_path)
    proc, cpu = _run_script(["run", str(study)], tmp_path)
    assert proc.returncode == 2 and "dataset 'mnist' not found" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "ray" not in proc.stderr.lower()
    assert cpu < SECONDS  # imports included; a Ray start alone costs more
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist_absent.yaml"]  # no runs/, no mlflow.db


# ---------------------------------------------------------------- a library call leaves the process alone
def test_start_search_changes_no_process_state(tmp_path, monkeypatch):
    """start_search sets no warning filter and no environment variable (the CLI's main may)."""
    from search import runner

    monkeypatch.setattr(runner, "init_ray", lambda address: None)
    monkeypatch.setattr(runner, "check_resources", lambda study, study_path=None: None)
    monkeypatch.setattr(runner, "build_tuner", lambda study, meta, callbacks: None)
    monkeypatch.setattr(runner, "_fit", lambda tuner, study, meta, runs, client: meta)
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    # once to import what it imports (imports may register warning filters), then measured
    runner.start_search(QUICK, tracking_uri=uri, runs_dir=tmp_path / "runs", name="warm", quiet=True)
    filters, environ = list(warnings.filters), dict(os.environ)
    meta = runner.start_search(QUICK, tracking_uri=uri, runs_dir=tmp_path / "runs", name="state", quiet=True)
    assert meta.name == "state" and (tmp_path / "runs" / "state" / "search.json").is_file()
    assert list(warnings.filters) == filters
    assert dict(os.environ) == environ


def test_start_search_refuses_bad_numbers_as_a_library(tmp_path):
    from search.errors import SearchError
    from search.runner import start_search

    for kwargs in ({"num_samples": -1}, {"num_samples": 0}, {"max_concurrent": 0}, {"num_samples": 2.5}):
        with pytest.raises(SearchError, match="must be a whole number >= 1"):
            start_search(QUICK, runs_dir=tmp_path / "runs", tracking_uri=f"sqlite:///{tmp_path}/m.db", **kwargs)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- a search whose every trial fails
@pytest.mark.slow
def test_search_whose_every_trial_fails_exits_1_once(tmp_path, monkeypatch, capsys, restore_environ):
    """Preflight bypassed (as on a cluster whose workers lack the data): every trial fails; said once, exit 1."""
    import ray

    from records import schema as tracking
    from records import writer
    from search import preflight

    monkeypatch.setattr(preflight, "check_study_datasets", lambda *a, **k: "")
    monkeypatch.chdir(tmp_path)
    study = _mnist_absent(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    try:
        code = main(["run", str(study), "--tracking-uri", uri, "--name", "doomed", "--quiet"])
    finally:
        ray.shutdown()
    out, err = capsys.readouterr()
    assert code == 1, err
    assert err.count("error: all 2 trials of search 'doomed' failed") == 1
    assert "dataset 'mnist' not found" in err and "Traceback" not in err
    parent = tracking.find_parent(writer.client_for(uri), "doomed")
    assert parent.data.tags[tracking.STATE] == "failed" and parent.info.status == "FAILED"


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch, capsys, restore_environ):
    """`download: true` where the network is unreachable: the dataset's error, on the driver, before Ray."""
    import urllib.error

    from trainables.core.torchvision_compat import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    monkeypatch.chdir(tmp_path)
    study = _mnist_absent(tmp_path)
    study.write_text(study.read_text().replace("data_dir:", "download: true, data_dir:"))
    assert main(["run", str(study)]) == 2
    err = capsys.readouterr().err
    assert "downloading MNIST into" in err and "name resolution" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist_absent.yaml", "no_data_here"]
