"""``make bench`` ends by regenerating docs/performance.md from bench/results: every committed result file
(a list such as mutants.json included) must go through ``bench/report.py``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_report_reads_every_committed_result(tmp_path):
    results, out = tmp_path / "results", tmp_path / "performance.md"
    shutil.copytree(ROOT / "bench" / "results", results)
    shutil.copy(ROOT / "docs" / "performance.md", out)  # the table is spliced into the page
    # A result written by its script directly (not through run_all.py) has no load figure: the report then looks
    # through every result for one, lists included.
    startup = json.loads((results / "cli_startup.json").read_text())
    startup.pop("loadavg", None)
    (results / "cli_startup.json").write_text(json.dumps(startup))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"), "--results", str(results),
                           "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "`search validate` in a fresh process" in out.read_text()
