"""Command-line overrides split at the first ``=``: a value may itself hold one."""

from __future__ import annotations

from search.overrides import parse_overrides


def test_a_value_may_contain_an_equals_sign():
    assert parse_overrides(["description=lr=0.1 runs", "budget.max_epochs=2"]) == {
        "description": "lr=0.1 runs", "budget.max_epochs": 2}
