"""Study files: load, validate against the core's registries, and turn into a search space.

A study file is YAML (read with a ``yaml.SafeLoader`` that also reads ``1e-3`` as a number,
not as the string YAML 1.1 makes of it). Everything is checked before any
trial starts; each problem becomes one line naming its key path and line number, and
``StudyError`` carries all of them at once.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from trainables.core.config import SWITCHES, ConfigError, Problem, TrainConfig, acting_fields, render, when_hint
from trainables.families import FAMILIES

from .exported import Exported
from .samplers import SAMPLERS
from .sections import EXPONENT_FLOAT, Budget, Objective, Param, Reproduce, Resources, _Strict

# ``follows:``: "seed NNN" (one of ../shared/seeds, by its number) and the section, or "own:" and why.
FOLLOWS = re.compile(r"^(seed \d{3}\b.+|own:\s*\S.*)$", re.DOTALL)


class StudyError(ValueError):
    """A study file (or another YAML input, ``what``) is invalid; ``problems`` holds one line per problem."""

    def __init__(self, path: str, problems: list[str], what: str = "study file"):
        self.path, self.problems = path, problems
        super().__init__(f"{path}: invalid {what}\n" + "\n".join(f"  {p}" for p in problems))


class Study(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    family: str
    dataset: str
    description: str = ""
    follows: str = Field("", description="the seed section the study follows, 'seed 002 section 3.3.3: ...' "
                         "(docs/seeds.md has each seed's table), or 'own: <why>' for a study of our own")
    objective: Objective = Objective()
    budget: Budget = Budget()
    resources: Resources = Resources()
    fixed: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, Param] = Field(default_factory=dict)
    seed: int = 0
    sampler: str = "tpe"  # a name in spaces.samplers.SAMPLERS; the command line's --sampler overrides it
    reproduce: Reproduce = Reproduce()

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, v: str) -> str:
        if v not in SAMPLERS:
            raise ValueError(f"unknown sampler '{v}'; choose one of: {', '.join(SAMPLERS)}")
        return v

    @field_validator("follows")
    @classmethod
    def _follows(cls, v: str) -> str:
        if v and not FOLLOWS.match(v.strip()):
            raise ValueError("follows names a seed section ('seed 002 section 3.4.3: ...') or says "
                             "'own: <why>'")
        return v.strip()

    @model_validator(mode="before")
    @classmethod
    def _grid_values_imply_the_grid_sampler(cls, data):
        """``type: grid`` means "walk every value": without a ``sampler:`` the study is searched by the grid
        sampler (under TPE a grid point could be sampled twice and another skipped; ``check_sampler`` refuses
        an explicit other sampler)."""
        search = data.get("search") if isinstance(data, dict) else None  # not a mapping: the schema says so
        if isinstance(search, dict) and "sampler" not in data and any(
                isinstance(p, dict) and p.get("type") == "grid" for p in search.values()):
            return {**data, "sampler": "grid"}
        return data

    # ------------------------------------------------------------ derived
    def base_config(self) -> dict[str, Any]:
        """What every trial shares: dataset, fixed parameters, the epoch budget, the seed."""
        return {"dataset": self.dataset, **self.fixed, "epochs": self.budget.max_epochs, "seed": self.seed}

    def reported_metrics(self) -> tuple[str, ...]:
        """What every trial reports every epoch: the family's metrics for the fixed configuration."""
        return FAMILIES[self.family].metrics(self.base_config())

    def grid_size(self) -> int:
        return math.prod(len(p.grid_values()) for p in self.search.values())


# ---------------------------------------------------------------- conditions
def condition_holds(when: dict[str, Any] | None, params: dict[str, Any]) -> bool:
    """``when: {loss: focal}`` or ``when: {optimizer: [sgd, sign_sgd]}``: all must hold."""
    if not when:
        return True
    for key, expected in when.items():
        allowed = expected if isinstance(expected, list) else [expected]
        if key not in params or params[key] not in allowed:
            return False
    return True


# ---------------------------------------------------------------- YAML
class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus exponent floats without a dot (``1e-3``, ``5e-4``): YAML 1.1 reads those
    as strings, and a choice list ``[1e-3, 1e-2]`` would hand strings to Optuna, the trainable and MLflow.
    (``spaces.sections.dump_yaml`` writes with the same rule, so a string such as a trial id
    ``16140e45`` is quoted and reads back as a string.)"""


_Loader.add_implicit_resolver(*EXPONENT_FLOAT)


class _AliasRefused(yaml.MarkedYAMLError):
    """An alias (``*name``): refused, since nested aliases expand exponentially ("billion laughs")."""


def _compose_node(self, parent, index):
    if self.check_event(yaml.AliasEvent):
        event = self.get_event()
        raise _AliasRefused(problem=f"YAML aliases (*{event.anchor}) are not accepted: write the value out",
                            problem_mark=event.start_mark)
    return yaml.SafeLoader.compose_node(self, parent, index)


_Loader.compose_node = _compose_node

MAX_YAML_BYTES = 1 << 20  # a study file is a page of text; a bigger one is a mistake (or an attack)


def read_yaml_file(path: str | Path, what: str = "study file") -> tuple[str, Any]:
    """Read a small UTF-8 YAML file (no aliases) and return (text, document); ``StudyError`` otherwise.

    Every way a file can be unusable (absent, a folder, unreadable, huge, not UTF-8, not YAML) is
    one line naming the file, and the line where there is one.
    """
    path = Path(path)
    source = str(path)

    def fail(problem: str):
        return StudyError(source, [f"(file): {problem}"], what)

    if path.is_dir():
        raise fail(f"{path} is a directory, not a {what}")
    if not path.exists():
        raise fail(f"no such {what}: {path}")
    if not path.is_file():
        raise fail(f"{path} is not a regular file")
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise fail(f"{path} is {size / 2**20:.1f} MiB; a {what} is at most {MAX_YAML_BYTES // 2**20} MiB")
        data = path.read_bytes()
    except OSError as e:
        raise fail(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise StudyError(source, [f"(file) (line {line}): not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                                  f"{e.start}); save the file as UTF-8"], what) from None
    return text, parse_yaml(text, source, what)


def parse_yaml(text: str, source: str = "<study>", what: str = "study file") -> Any:
    """YAML text -> Python objects with our loader; syntax errors name their line."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise StudyError(source, ["(file): nested too deeply to be a " + what], what) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        position = getattr(e, "position", None)  # a ReaderError: a character YAML does not allow
        if mark is None and isinstance(position, int):
            where = f" (line {text.count(chr(10), 0, position) + 1})"
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or str(e).splitlines()[0]
        if isinstance(e, yaml.reader.ReaderError):
            problem = str(e).splitlines()[0]
        context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and start is not None and (mark is None or start.line != mark.line):
            problem += f" ({context} that starts on line {start.line + 1})"
        kind = "" if isinstance(e, _AliasRefused) else "not valid YAML: "
        raise StudyError(source, [f"(file){where}: {kind}{problem}"], what) from None


def _line_index(text: str, duplicates: list[tuple[tuple, int, int]] | None = None) -> dict[tuple, int]:
    """Map each key path in a YAML document to its (1-based) line.

    YAML silently keeps the last of two equal keys in a mapping; when
    ``duplicates`` is given, each repeated key is appended to it as (path, line, first line).
    """
    index: dict[tuple, int] = {}
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return index

    def walk(node, path):
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else None
                line = k.start_mark.line + 1
                if key is not None and key != "<<":
                    if key in first and duplicates is not None:
                        duplicates.append((path + (key,), line, first[key]))
                    first.setdefault(key, line)
                walk(v, path + (key,))
                index[path + (key,)] = line  # YAML keeps the last of equal keys
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return index


COMMAND_LINE = "command line"  # where an override's problem is placed instead of a line of the file


def apply_overrides(raw: dict, overrides: dict[str, Any]) -> list[tuple] | StudyError:
    """Set each dotted key (``search.lr.high``) in the study document; the key paths the overrides wrote
    (with the mappings they created), or the keys that cannot be set (a path through a value that is not
    a mapping)."""
    placed, problems = [], []
    for key, value in overrides.items():  # e.g. budget.num_samples from the command line
        path = tuple(key.split("."))
        node = raw
        for i, part in enumerate(path[:-1]):
            if node.get(part) is None:
                node[part] = {}
                placed.append(path[:i + 1])
            if not isinstance(node[part], dict):
                problems.append(f"{'.'.join(path[:i + 1])} ({COMMAND_LINE}): is {node[part]!r}, not a mapping; "
                                f"{key} cannot be set")
                break
            node = node[part]
        else:
            node[path[-1]] = value
            placed.append(path)
    return StudyError("", problems) if problems else placed


class _Problems:
    def __init__(self, lines: dict[tuple, int | str]):
        self.lines, self.items = lines, []

    def add(self, path: tuple, msg: str, line: int | str | None = None):
        for n in range(len(path), 0, -1):  # the key itself, else its closest parent in the file
            if line is not None:
                break
            if path[:n] in self.lines:
                line = self.lines[path[:n]]
        where = ".".join(str(p) for p in path) or "(file)"
        place = f" ({line})" if isinstance(line, str) else f" (line {line})" if line else ""
        self.items.append(f"{where}{place}: {msg}")


def key_line(path: str | Path, key: tuple) -> int | None:
    """The line of ``key`` (a key path such as ``("resources", "gpus")``) in the YAML file at ``path``, if written."""
    return _line_index(Path(path).read_text()).get(key)


def yaml_problems(text: str) -> _Problems:
    """A problem collector that places each key path at its line in ``text`` (for YAML inputs besides studies)."""
    return _Problems(_line_index(text))


# ---------------------------------------------------------------- best.yaml
EXPORTED = "exported configuration"


def load_exported(path: str | Path) -> Exported:
    """Read a ``best.yaml``; every problem is a ``StudyError`` line with its key path and line number."""
    text, doc = read_yaml_file(path, EXPORTED)
    if not isinstance(doc, dict):
        got = "an empty file" if doc is None else f"a {type(doc).__name__}"
        raise StudyError(str(path), [f"(file): a mapping with family, config, ... as `search export` writes it "
                                     f"(got {got})"], EXPORTED)
    problems = yaml_problems(text)
    try:
        exported = Exported.model_validate(doc)
    except ValidationError as e:
        exported = None
        for err in e.errors():
            loc, msg = tuple(err["loc"]), err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                problems.add(loc[:-1], f"required key '{loc[-1]}' is missing (write the file with `search export NAME`)")
            elif loc == ("config",):
                problems.add(loc, f"a mapping of training parameters (got {type(doc['config']).__name__})")
            else:
                problems.add(loc, msg)
    if exported is not None and exported.family not in FAMILIES:
        problems.add(("family",), f"unknown family {exported.family!r}; choose one of: {', '.join(FAMILIES)}")
    if exported is not None:
        for loc, msg in _config_problems(exported.config_at(), strict=True):
            problems.add(("config", *loc), msg)
    if problems.items:
        raise StudyError(str(path), problems.items, EXPORTED)
    return exported


# ---------------------------------------------------------------- loading
def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> Study:
    """Read and validate a study file; raise ``StudyError`` listing every problem."""
    text, raw = read_yaml_file(path)
    return _validate(raw, text, str(path), overrides)


def parse_study(text: str, source: str = "<study>", overrides: dict[str, Any] | None = None) -> Study:
    return _validate(parse_yaml(text, source), text, source, overrides)


def _validate(raw: Any, text: str, source: str, overrides: dict[str, Any] | None) -> Study:
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise StudyError(source, [f"(file): a study file is a mapping with name, family, dataset, ... (got {got})"])
    duplicates: list[tuple[tuple, int, int]] = []
    lines: dict[tuple, int | str] = dict(_line_index(text, duplicates))
    placed = apply_overrides(raw, overrides or {})
    if isinstance(placed, StudyError):
        raise StudyError(source, placed.problems)
    lines.update(dict.fromkeys(placed, COMMAND_LINE))  # a problem there is the command line's, not the file's
    repeated = _Problems(lines)
    for path, line, first in duplicates:
        repeated.add(path, f"duplicate key, first on line {first}: YAML would silently keep only the last one",
                     line=line)
    problems = _Problems(lines)
    try:
        study = Study.model_validate(raw)
    except ValidationError as e:
        for err in e.errors():
            loc = tuple(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
                model = _model_at(loc[:-1])
                if model is not None:
                    msg += f"{_did_you_mean(loc[-1], model.model_fields)}; valid keys: {', '.join(model.model_fields)}"
            elif err["type"] == "missing":
                loc, msg = loc[:-1], f"required key '{loc[-1]}' is missing"
            problems.add(loc, msg)
        raise StudyError(source, repeated.items + problems.items) from None
    _check_semantics(study, problems)
    if repeated.items or problems.items:
        raise StudyError(source, repeated.items + problems.items)
    return study


def _did_you_mean(name: Any, valid) -> str:
    near = difflib.get_close_matches(str(name), list(valid), n=1)
    return f" (did you mean '{near[0]}'?)" if near else ""


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``loc`` (for listing its valid keys)."""
    model: Any = Study
    for part in loc:
        if model is Study and part == "search":
            model = dict  # search.<name> is a Param
            continue
        if model is dict:
            model = Param
            continue
        field = model.model_fields.get(part) if isinstance(part, str) else None
        ann = field.annotation if field is not None else None
        ann = next((a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)),
                   ann)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _config_problems(config: dict[str, Any], strict: bool = False) -> list[Problem]:
    """Value problems of one configuration (whether each field acts is checked over the whole space, unless
    ``strict``: then for this configuration alone)."""
    try:
        TrainConfig.from_dict(config, strict=strict)
        return []
    except ConfigError as e:
        return e.problems


MAX_BRANCHES = 4096  # configurations enumerated to check that each parameter acts where it is searched


def branches(study: Study) -> list[dict[str, Any]]:
    """One configuration per combination of the searched switch choices (model, optimizer, loss, ...)
    that the conditions allow, with every other searched parameter present where its condition holds.

    Which fields act depends only on the switches, so these cover every case a trial can meet."""
    configs: list[dict[str, Any]] = [study.base_config()]
    for name, p in study.search.items():
        nxt = []
        for c in configs:
            if not condition_holds(p.when, c):
                nxt.append(c)
            elif name in SWITCHES and p.is_discrete():
                nxt += [{**c, name: v} for v in p.grid_values()]
            else:
                nxt.append({**c, name: p.endpoints()[0]})
        if len(nxt) > MAX_BRANCHES:
            return configs
        configs = nxt
    return configs


def _check_semantics(study: Study, problems: _Problems) -> None:
    if study.family not in FAMILIES:
        problems.add(("family",), f"unknown family '{study.family}'; choose one of: {', '.join(FAMILIES)}")
        return
    family = FAMILIES[study.family]
    fields = TrainConfig.model_fields
    reserved = {"dataset": "the top-level 'dataset'", "epochs": "budget.max_epochs", "seed": "the top-level 'seed'"}
    for section in ("fixed", "search"):
        for name in getattr(study, section):
            if name in reserved:
                problems.add((section, name), f"set this with {reserved[name]}, not in '{section}'")
            elif name not in fields:
                problems.add((section, name), f"unknown parameter '{name}'{_did_you_mean(name, fields)}; "
                             f"valid parameters: {', '.join(fields)}")
    both = set(study.fixed) & set(study.search)
    for name in both:
        problems.add(("search", name), "is both fixed and searched: keep it in one place")
    if problems.items:
        return

    base = study.base_config()
    for loc, msg in _config_problems(base) + family.schema_problems(base):
        key = loc[0] if loc else None
        if key == "dataset":
            problems.add(("dataset",), msg)
        elif key in study.fixed:
            problems.add(("fixed", key), msg)
        elif key == "epochs":
            problems.add(("budget", "max_epochs"), msg)
        elif key is None:  # a rule across several parameters
            problems.add(("fixed",), msg)
        else:
            problems.add(("fixed",), render((loc, msg)))
    if problems.items:
        return

    seen: list[str] = []
    for name, p in study.search.items():
        for key, expected in (p.when or {}).items():
            where = ("search", name, "when", key)
            allowed = expected if isinstance(expected, list) else [expected]
            if key in base:
                possible = [base[key]]
            elif key in seen:
                ref = study.search[key]
                if not ref.is_discrete():
                    problems.add(where, f"condition on '{key}', a continuous parameter: conditions test fixed "
                                 "or choice/grid/int parameters")
                    continue
                possible = ref.grid_values()
            else:
                problems.add(where, f"condition on '{key}', which is neither fixed nor searched before '{name}'")
                continue
            if not any(v in possible for v in allowed):
                takes = f"only takes {possible[0]!r}" if len(possible) == 1 else f"takes one of {possible}"
                problems.add(where, f"condition {{{key}: {expected}}} never holds: '{key}' {takes}")
        for i, value in enumerate(p.endpoints()):
            where = ("search", name, "values", i) if p.type in ("choice", "grid") else ("search", name)
            for loc, msg in _config_problems({**base, name: value}) + family.schema_problems({name: value}):
                problems.add(where, msg if loc[:1] == (name,) else render((loc, msg)))
        seen.append(name)
    if problems.items:
        return

    # Every value must act: a fixed one in some trial, a searched one in every trial that samples it.
    cases = branches(study)
    acting = [acting_fields(c) for c in cases]
    for name in study.fixed:
        if not any(name in a for a in acting):
            problems.add(("fixed", name), when_hint(name, cases[0]))
    for name in study.search:
        for c, a in zip(cases, acting):
            if name in c and name not in a:
                problems.add(("search", name), when_hint(name, c))
                break

    metrics = study.reported_metrics()
    if study.objective.metric not in metrics:
        problems.add(("objective", "metric"), f"family '{study.family}' never reports '{study.objective.metric}'; "
                     f"it reports: {', '.join(metrics)}")
    c = study.objective.constraint
    if c is not None and c.metric not in metrics:
        problems.add(("objective", "constraint", "metric"), f"family '{study.family}' never reports '{c.metric}'; "
                     f"it reports: {', '.join(metrics)}")
    pw = study.objective.pareto_with
    if pw is not None and pw.metric not in metrics:
        problems.add(("objective", "pareto_with", "metric"), f"family '{study.family}' never reports '{pw.metric}'; "
                     f"it reports: {', '.join(metrics)}")
    if study.resources.gpus > 1 and study.resources.gpus != int(study.resources.gpus):
        problems.add(("resources", "gpus"), "more than one GPU per trial must be a whole number")


def check_sampler(study: Study, sampler: str) -> list[str]:
    """Problems that only appear with a given sampler: one that searches two objectives needs the second
    one and no early stopping (ASHA ranks trials on one metric); one over a finite space (grid) needs
    discrete parameters, and a ``type: grid`` parameter needs such a sampler (a study without ``sampler:``
    gets the grid sampler); ``choice`` is the categorical parameter the other samplers draw from.
    """
    if sampler not in SAMPLERS:
        return [f"sampler: unknown sampler '{sampler}'; choose one of: {', '.join(SAMPLERS)}"]
    kind, problems = SAMPLERS[sampler], []
    if kind.objectives == 2:
        if study.objective.pareto_with is None:
            problems.append(f"objective.pareto_with: the {sampler} sampler searches two objectives; name the second "
                            "one here (metric, mode)")
        if study.objective.constraint is not None:
            problems.append(f"objective.constraint: not supported with the {sampler} sampler (make it a second "
                            "objective with pareto_with instead)")
        if study.budget.scheduler != "none":
            problems.append(f"budget.scheduler: the {sampler} sampler needs 'none' (ASHA stops trials on one metric)")
    if kind.finite_space:
        problems += [f"search.{n}: the {sampler} sampler needs choice/grid/int parameters, not '{p.type}'"
                     for n, p in study.search.items() if not p.is_discrete()]
    else:
        problems += [f"search.{n}: 'type: grid' values are walked by the grid sampler, not sampled by '{sampler}' "
                     "(which may draw one value twice and skip another); drop the other sampler, or write "
                     "'type: choice'" for n, p in study.search.items() if p.type == "grid"]
    return problems


# ---------------------------------------------------------------- Optuna define-by-run
def suggest(trial, name: str, p: Param):
    if p.type in ("choice", "grid"):
        return trial.suggest_categorical(name, p.values)
    if p.type == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    if p.type == "loguniform":
        return trial.suggest_float(name, p.low, p.high, log=True)
    return trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)


class DefineByRun:
    """The study's space as an Optuna define-by-run function returning the trial's constants.

    Conditional parameters are only suggested when their condition holds, so they never
    appear in a trial where they mean nothing (focal gamma without the focal loss, ...).
    A class, not a closure: Tune pickles the searcher with the experiment state.
    """

    def __init__(self, study: Study, extra: dict[str, Any] | None = None):
        self.study, self.extra = study, extra or {}

    def __call__(self, trial) -> dict[str, Any]:
        base = self.study.base_config()
        params: dict[str, Any] = {}
        for name, p in self.study.search.items():
            if condition_holds(p.when, {**base, **params}):
                params[name] = suggest(trial, name, p)
        # A fixed value that does not act in this trial (adv_eps when adv_mode is none) is left out:
        # the trial's config holds exactly the values that act, and the trainer accepts it as such.
        acting = acting_fields({**base, **params})
        return {**{k: v for k, v in base.items() if k in acting}, **self.extra}


def define_by_run(study: Study, extra: dict[str, Any] | None = None) -> DefineByRun:
    return DefineByRun(study, extra)


def sample_config(study: Study, trial) -> dict[str, Any]:
    """A full trial config from an Optuna trial (used by tests and dry runs)."""
    constants = define_by_run(study)(trial)
    return {**constants, **trial.params}


def list_studies(folder: str | Path | None = None) -> list[Path]:
    folder = Path(folder) if folder else Path(__file__).parent
    return sorted(folder.glob("*.yaml"))
