"""Suite files (``spaces/suites/<seed>.yaml``): the studies that answer one seed's tables and figures, and the
claims the seed printed, as data with their table / figure reference.

A claim names the study that answers it and how our trials answer it (``compare``: the mean of ``metric`` over
the trials matching ``a`` against those matching ``b``, ``expect`` ``>`` or ``<``; ``close``: the same two means
within ``tolerance``). ``seed`` holds what the seed printed (its number, or ``null`` for a figure read by eye),
on which dataset and at which scale, so the report can put it beside ours and say when they are not comparable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from trainables.core.metric_names import INDEPENDENT_METRICS, TEST_METRICS

from .study import StudyError, _Strict, load_study, read_yaml_file, yaml_problems

SUITES_DIR = Path(__file__).parent / "suites"
SPACES_DIR = Path(__file__).parent


class SeedNumber(_Strict):
    text: str  # what the seed says, in a few words
    value: float | None = None  # its printed number (a fraction), None for a figure read by eye
    a: float | None = None  # its number for side a of a comparison, when it printed one
    b: float | None = None
    dataset: str
    scale: str  # model and budget
    measured: bool = True  # False: the seed's numbers did not come from real data (FakeData, "typical" figures)


class Claim(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    ref: str  # the seed's table / figure / section
    study: str  # a study of this suite
    kind: Literal["compare", "close"]
    metric: str
    a: dict[str, Any]  # parameter -> value, or {min: x} / {max: x} for a range
    b: dict[str, Any]
    a_label: str
    b_label: str
    expect: Literal[">", "<"] = ">"
    tolerance: float = Field(0.02, gt=0)
    seed: SeedNumber


class Suite(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed_file: str  # the seed it replicates (under ../shared/seeds)
    title: str
    note: str = ""
    studies: list[str] = Field(min_length=1)
    claims: list[Claim] = Field(min_length=1)


def suite_path(name: str) -> Path:
    return SUITES_DIR / f"{name}.yaml"


def list_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """A suite by name (``spaces/suites/NAME.yaml``) or path; ``StudyError`` naming each problem's key and line."""
    path = Path(name_or_path)
    if not path.suffix:
        path = suite_path(str(name_or_path))
        if not path.is_file():
            raise StudyError(str(name_or_path), [f"(file): no suite named '{name_or_path}'; suites: "
                                                 f"{', '.join(list_suites()) or '(none)'}"], "suite")
    text, raw = read_yaml_file(path, "suite file")
    problems = yaml_problems(text)
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as e:
        for err in e.errors():
            problems.add(tuple(err["loc"]), err["msg"].removeprefix("Value error, "))
        raise StudyError(str(path), problems.items, "suite file") from None
    for i, study in enumerate(suite.studies):
        if not (SPACES_DIR / f"{study}.yaml").is_file():
            problems.add(("studies", i), f"no study spaces/{study}.yaml")
    for i, claim in enumerate(suite.claims):
        if claim.study not in suite.studies:
            problems.add(("claims", i, "study"), f"'{claim.study}' is not one of this suite's studies")
    if problems.items:
        raise StudyError(str(path), problems.items, "suite file")
    for i, claim in enumerate(suite.claims):
        study = load_study(SPACES_DIR / f"{claim.study}.yaml")
        names = set(study.search) | set(study.fixed)
        for side in ("a", "b"):
            for key in getattr(claim, side):
                if key not in names:
                    problems.add(("claims", i, side, key), f"'{key}' is neither searched nor fixed in {claim.study}")
        if claim.metric not in (*study.reported_metrics(), *TEST_METRICS, *INDEPENDENT_METRICS):
            problems.add(("claims", i, "metric"), f"{claim.study} never reports '{claim.metric}'")
    if problems.items:
        raise StudyError(str(path), problems.items, "suite file")
    return suite


def study_file(study: str) -> Path:
    return SPACES_DIR / f"{study}.yaml"


def search_name(suite: Suite, study: str) -> str:
    """The search that answers ``study`` for ``suite`` (``search suite run`` names it, the report reads it)."""
    return f"{suite.name}-{study}"


__all__ = ["Suite", "Claim", "SeedNumber", "load_suite", "list_suites", "suite_path", "study_file", "search_name", "SUITES_DIR"]
