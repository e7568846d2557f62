"""Each family's report sections from a real search: the generalization family's source -> target matrix and
fine-tuning table carry the numbers of its trials (trials.csv), ``search show`` shows xdomain_acc_*, and the
HTML page renders in headless Chromium."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import textwrap

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

STUDY = textwrap.dedent("""\
    name: tiny_finetune
    family: generalization
    dataset: digits
    objective: {metric: finetune_acc, mode: max}
    budget: {num_samples: 4, max_epochs: 3, scheduler: none}
    resources: {cpus: 1, gpus: 0}
    fixed:
      model: cnn
      filters: [8, 16]
      batch_size: 64
      eval_datasets: ["digits:rotate@4", "digits:gaussian_noise@3"]
      finetune_dataset: "digits:rotate@4"
      finetune_epochs: 1
      finetune_lr: 0.05
    search:
      finetune_per_class: {type: grid, values: [5, 20]}
      freeze: {type: grid, values: [trunk, none]}
    seed: 0
""")


def _table(text: str, header_start: str) -> pd.DataFrame:
    """The Markdown table whose header line starts with ``header_start``."""
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return pd.DataFrame(rows[2:], columns=rows[0])


@pytest.fixture(scope="module")
def generalization_search(tmp_path_factory):
    import ray

    from search.cli import main

    root = tmp_path_factory.mktemp("gen")
    (root / "tiny_finetune.yaml").write_text(STUDY)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["run", str(root / "tiny_finetune.yaml"), "--tracking-uri", uri, "--runs-dir",
                         str(root / "runs"), "--name", "gen", "--quiet"]) == 0
    finally:
        ray.shutdown()
    return uri, root


def test_generalization_report_shows_the_matrix_and_finetune_table_of_its_trials(generalization_search, capsys):
    from search.cli import main

    uri, root = generalization_search
    out = root / "report"
    assert main(["report", "gen", "--tracking-uri", uri, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "report logged to MLflow: " in printed
    text = (out / "report.md").read_text()
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4 and set(zip(trials["finetune_per_class"], trials["freeze"])) == {
        (5, "trunk"), (5, "none"), (20, "trunk"), (20, "none")}  # grid values: every point once

    matrix = _table(text, "| trained on")
    best = trials.iloc[0]
    assert matrix["trained on"].tolist() == ["digits"] and matrix["trial"].tolist() == [best["trial"]]
    for target in ("digits_rotate_4", "digits_gaussian_noise_3"):
        assert float(matrix[target].iloc[0]) == pytest.approx(best[f"xdomain_acc_{target}"], abs=5e-5)

    ft = _table(text, "| finetune_per_class | freeze")
    assert len(ft) == 4
    for _, row in ft.iterrows():
        sel = trials[(trials["finetune_per_class"] == int(row["finetune_per_class"])) & (trials["freeze"] == row["freeze"])]
        assert float(row["before"]) == pytest.approx(sel["finetune_acc_before"].mean(), abs=5e-5)
        assert float(row["after"]) == pytest.approx(sel["finetune_acc"].mean(), abs=5e-5)
        assert row["source_acc_lost"] != ""
    # the objective was read on the fine-tuning epoch: every trial's best epoch is the last one
    assert (trials["best_epoch"] == 3).all()
    assert (out / "xdomain_curves.png").is_file() and (out / "diagnostics" / "diagnostics.json").is_file()
    assert "### Diagnostics of the best model" in text

    assert main(["show", "gen", "--tracking-uri", uri]) == 0
    shown = capsys.readouterr().out
    assert "xdomain_acc_digits_rotate_4" in shown and "finetune_acc" in shown


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_report_html_renders_in_headless_chromium(generalization_search, tmp_path):
    from analysis import report

    uri, root = generalization_search
    report.build("gen", uri, tmp_path / "r", log=lambda m: None, log_to_mlflow=False, best_model=False)
    page = tmp_path / "r" / "report.html"
    # every image decodes (naturalWidth > 0) and no script error: the page writes its own verdict into the DOM
    probe = page.with_name("probe.html")
    guard = "<head><script>window.onerror = function (m) { document.title = 'SCRIPT_ERROR ' + m; };</script>"
    probe.write_text(page.read_text().replace("<head>", guard, 1).replace("</body>", """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length;
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-broken', broken);
});
</script></body>"""))
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
           "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    images = int(re.search(r'data-images="(\d+)"', dom).group(1))
    assert images == page.read_text().count("<img ") and images >= 5
    assert re.search(r'data-broken="0"', dom) and "<title>SCRIPT_ERROR" not in dom
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2000", page.as_uri()], capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000
