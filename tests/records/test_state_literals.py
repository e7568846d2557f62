"""Every trial and search state is written once (records/states.py): writers and readers import
``Outcome`` / ``SearchState`` instead of spelling the states as strings."""

from __future__ import annotations

import ast
from pathlib import Path

from records.states import Outcome, SearchState, TrialState, parse_search_state

ROOT = Path(__file__).resolve().parents[2]
STATES = {s.value for s in Outcome} | {s.value for s in SearchState}


def test_no_state_is_spelled_outside_its_owner():
    spelled = []
    # (The training core's own run status, ``TrainResult.status``, is the core's: it imports no records.)
    for pkg in ("search", "records", "analysis", "spaces", "trainables"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path == ROOT / "records" / "states.py" or ROOT / "trainables" / "core" in path.parents:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in STATES:
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not spelled, spelled


def test_one_tag_format_and_one_parser_for_each():
    assert str(TrialState(Outcome.STOPPED, 3)) == "stopped early by ASHA at epoch 3"
    assert SearchState.FINISHED.tag("2 of 3 seeds") == "finished: 2 of 3 seeds"
    assert parse_search_state("finished: 2 of 3 seeds") is SearchState.FINISHED
    assert parse_search_state("driver lost") is SearchState.DRIVER_LOST
    assert parse_search_state("finishing") is None and parse_search_state(None) is None
    assert SearchState.RUNNING == "running"  # a tag read from MLflow compares equal to its state
