"""``trainables.core.torchvision_compat``: importing torchvision with and without a matching compiled extension.

The import-time paths run in fresh interpreters (operator registration is process-wide and
cannot be undone); ``_try_load_extension`` is unit-tested in-process with monkeypatching.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def start_python(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Interpreters:
    """The fresh interpreters of this module, started together (each mostly waits on imports)."""

    def __init__(self, scripts: dict[str, str]):
        self.procs = {name: start_python(code) for name, code in scripts.items()}
        self.results: dict[str, Result] = {}

    def __getitem__(self, name: str) -> Result:
        if name not in self.results:
            out, err = self.procs[name].communicate(timeout=180)
            self.results[name] = Result(self.procs[name].returncode, out, err)
        return self.results[name]

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate()


@pytest.fixture(scope="module")
def interpreters():
    runs = Interpreters({"bare": "import torchvision", "stubbed": STUBBED_PATH, "matching": MATCHING_BUILD})
    yield runs
    runs.close()


# ---------------------------------------------------------------- (a) mismatched build: stubs
def test_plain_import_torchvision_fails_on_a_mismatched_build(interpreters):
    result = interpreters["bare"]
    if result.returncode == 0:
        pytest.skip("torchvision imports on its own here: a torchvision build matching this torch is installed")
    assert "does not exist" in result.stderr, result.stderr[-2000:]
    assert "torchvision::" in result.stderr


STUBBED_PATH = """
import torch

from trainables.core.torchvision_compat import STUBBED, torchvision
import trainables.core.torchvision_compat as tv
print(f"STUBBED={STUBBED}")
assert tv.ops_registered()

import torchvision.datasets
import torchvision.transforms.v2 as T
assert torchvision.datasets.FashionMNIST and torchvision.datasets.CIFAR10 and torchvision.datasets.SVHN
x = torch.rand(2, 3, 8, 8)
assert torch.equal(T.RandomHorizontalFlip(p=1.0)(x), x.flip(-1))
assert T.Resize((4, 4), antialias=True)(x).shape == (2, 3, 4, 4)
model = torchvision.models.resnet18(num_classes=3).eval()
with torch.no_grad():
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 3)

boxes, scores = torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1]]), torch.tensor([0.9, 0.8])
if STUBBED:
    try:
        torchvision.ops.nms(boxes, scores, 0.5)
    except RuntimeError as e:
        assert "torchvision" in str(e), e
    else:
        raise AssertionError("torchvision.ops.nms should raise")
    try:
        torch.ops.torchvision.nms(boxes, scores, 0.5)  # the operator itself: our stub's message
    except RuntimeError as e:
        assert "torchvision::nms is unavailable" in str(e) and torch.__version__ in str(e), e
    else:
        raise AssertionError("torch.ops.torchvision.nms should raise")
    # idempotent: the operators exist now, so nothing more is defined
    lib = tv._stub_library
    assert lib is not None
    assert tv.install_stub_ops() is False
    assert tv.ensure_torchvision_importable() is False
    assert tv._stub_library is lib
else:
    assert tv._stub_library is None
print("OK")
"""


def test_import_through_tv_works_and_detection_ops_raise_clearly(interpreters):
    result = interpreters["stubbed"]
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]
    # stubs exactly when torchvision cannot import on its own
    mismatch = interpreters["bare"].returncode != 0
    assert f"STUBBED={mismatch}" in result.stdout


# ---------------------------------------------------------------- (b) matching build: no stubs
MATCHING_BUILD = """
import ast
import sys
from pathlib import Path

import torch

# The schemas torchvision_compat.py would stub, read without importing it.
source = Path("trainables/core/torchvision_compat.py").read_text()
node = next(n for n in ast.parse(source).body if isinstance(n, ast.Assign) and n.targets[0].id == "OP_SCHEMAS")
schemas = ast.literal_eval(node.value)

calls, libs = [], []


def nms(dets, scores, iou_threshold):  # a working (if simple) kernel, as a real build would have
    return scores.argsort(descending=True)


def missing(*args, **kwargs):
    raise NotImplementedError("not part of this simulation")


def fake_load_library(path):
    # Loading a matching torchvision/_C.so registers the torchvision:: operators.
    calls.append(str(path))
    if libs:
        return
    lib = torch.library.Library("torchvision", "DEF")
    for name, schema in schemas.items():
        lib.define(schema)
        lib.impl(name, nms if name == "nms" else missing, "CompositeExplicitAutograd")
    lib.define("_cuda_version() -> int")
    lib.impl("_cuda_version", lambda: -1, "CompositeExplicitAutograd")
    libs.append(lib)


torch.ops.load_library = fake_load_library

import trainables.core.torchvision_compat as tv

assert tv.STUBBED is False
assert tv._stub_library is None  # nothing defined by tv
assert calls and Path(calls[0]).name.startswith("_C") and Path(calls[0]).parent.name == "torchvision", calls
scores = torch.tensor([0.1, 0.9, 0.5])
assert torch.ops.torchvision.nms(torch.zeros(3, 4), scores, 0.5).tolist() == [1, 2, 0]
assert tv.torchvision.ops.nms(torch.zeros(3, 4), scores, 0.5).tolist() == [1, 2, 0]  # the real kernel
assert tv.ensure_torchvision_importable() is False
assert tv.install_stub_ops() is False and tv._stub_library is None
import torchvision.datasets  # noqa: F401
import torchvision.transforms.v2  # noqa: F401
print("OK")
"""


def test_matching_build_defines_nothing(interpreters):
    result = interpreters["matching"]
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]


# ---------------------------------------------------------------- _try_load_extension, in-process
@pytest.fixture
def tv(monkeypatch):
    from trainables.core import torchvision_compat as module

    loaded = []
    monkeypatch.setattr(torch.ops, "load_library", lambda path: loaded.append(Path(path)))
    module.loaded = loaded
    yield module
    del module.loaded


def test_try_load_extension_true_when_the_library_loads_and_registers_ops(tv, monkeypatch):
    monkeypatch.setattr(tv, "ops_registered", lambda: True)
    assert tv._try_load_extension() is True
    assert tv.loaded and all(p.name.startswith("_C") and p.suffix == ".so" for p in tv.loaded)
    assert tv.loaded[0].parent.name == "torchvision"


def test_try_load_extension_false_when_the_library_loads_but_registers_nothing(tv, monkeypatch):
    monkeypatch.setattr(tv, "ops_registered", lambda: False)
    assert tv._try_load_extension() is False
    assert tv.loaded  # it did try


@pytest.mark.parametrize("error", [OSError("undefined symbol: _ZN3c10..."), RuntimeError("bad")])
def test_try_load_extension_false_when_loading_fails(tv, monkeypatch, error):
    def fail(path):
        raise error

    monkeypatch.setattr(torch.ops, "load_library", fail)
    monkeypatch.setattr(tv, "ops_registered", lambda: True)
    assert tv._try_load_extension() is False


def test_try_load_extension_false_without_torchvision(tv, monkeypatch):
    monkeypatch.setattr(tv.importlib.util, "find_spec", lambda name: None)
    assert tv._try_load_extension() is False
    assert tv.loaded == []


def test_ensure_prefers_the_real_extension(tv, monkeypatch):
    state = {"registered": False}
    monkeypatch.setattr(tv, "ops_registered", lambda: state["registered"])
    monkeypatch.setattr(torch.ops, "load_library", lambda path: state.update(registered=True))
    monkeypatch.setattr(tv, "install_stub_ops", lambda: pytest.fail("stubs installed despite a working build"))
    assert tv.ensure_torchvision_importable() is False
    assert state["registered"]
