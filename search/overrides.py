"""Study settings from the command line: ``search run study.yaml budget.max_epochs=2 fixed.lr=0.01``.

Each override is ``KEY.PATH=VALUE``, its value read as YAML (``2`` an int, ``0.01`` a float, ``[8, 16]`` a
list, ``adam`` a string). They are set in the study document before it is validated, so a bad value is the
error the file would give, placed at its key path and "(command line)". The search freezes the study with
them applied (what ``resume`` and the records read) and records them on its parent run (``rs.overrides``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from spaces.study import apply_overrides, parse_yaml, read_yaml_file

from .errors import SearchError

TAG = "rs.overrides"
KEY_PATH = re.compile(r"^[A-Za-z_][\w\-]*(\.[A-Za-z0-9_][\w\-]*)*$")


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["budget.max_epochs=2", ...]`` -> ``{"budget.max_epochs": 2, ...}``; one line per bad item (exit 2)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not KEY_PATH.match(key):
            raise SearchError(f"override {item!r}: write KEY.PATH=VALUE with a study key path, e.g. "
                              "budget.max_epochs=2 or search.lr.high=0.1")
        if key in out:
            raise SearchError(f"override {key}: given twice ({key}={out[key]!r} and {item!r})")
        try:
            out[key] = parse_yaml(text, key, "command-line value")
        except Exception as e:  # noqa: BLE001 - a StudyError whose one line names the key
            raise SearchError(f"override {key}: {str(e).splitlines()[-1].strip()}") from None
    return out


def as_text(overrides: dict[str, Any]) -> str:
    """The overrides as they were given (normalized), for the parent run's tag and the frozen study's header."""
    return " ".join(f"{k}={yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix('...').strip()}"
                    for k, v in overrides.items())


def frozen_text(study_path: str | Path, overrides: dict[str, Any]) -> str:
    """The study file as the search runs it: the file itself, or its document with the overrides applied."""
    text, raw = read_yaml_file(study_path)
    if not overrides:
        return text
    apply_overrides(raw, overrides)  # already validated by load_study: every path can be set
    header = " ".join(f"{Path(study_path).name} with the command-line overrides {as_text(overrides)}".splitlines())
    return f"# {header}\n" + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
