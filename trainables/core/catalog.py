"""What the registries hold, readable without importing the modules that register (and so without torch).

``catalog.json`` records, for every kind and entry, what validating a configuration reads: a builder's
config fields (its keyword-only parameters: the signature stays the one declaration), a dataset's facts
and a corruption's levels (``infos``), and a plain value. It is generated from the live registries:

    python -m trainables.core.catalog        # writes trainables/core/catalog.json

and a test checks the checked-in file against them, so it cannot drift. ``entries(kind)`` is what the
config reads: the live registry once every registering module is loaded (``registry.loaded``), else the
catalog's entries overlaid by whatever has been registered live in this process (a component a test
registers at run time validates at once).
"""

from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from .infos import Corruption, DatasetInfo
from .registry import REGISTRIES, Declared, Registry, config_fields, load_components, loaded

PATH = Path(__file__).with_name("catalog.json")
REGENERATE = "python -m trainables.core.catalog"
VALUES = {cls.__name__: cls for cls in (DatasetInfo, Corruption)}  # the entry values it rebuilds


def _record(obj: Any) -> dict[str, Any]:
    """One entry as JSON: its config fields, and its data where it is a value."""
    if type(obj).__name__ in VALUES and dataclasses.is_dataclass(obj):
        data = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if not callable(getattr(obj, f.name))}
        return {type(obj).__name__: data}
    if isinstance(obj, (str, int, float, bool)) and not callable(obj):
        return {"value": obj}
    return {"fields": list(config_fields(obj))}  # a builder; any other value: a name that declares no field


def build() -> dict[str, dict[str, Any]]:
    """The catalog of the live registries (every registering module loaded)."""
    load_components()
    return {kind: {name: _record(obj) for name, obj in reg.items()} for kind, reg in REGISTRIES.items()}


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _entry(record: dict[str, Any]) -> Any:
    for name, cls in VALUES.items():
        if name in record:
            data = {k: _tuples(v) for k, v in record[name].items()}
            return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})
    if "fields" in record:
        return Declared(tuple(record["fields"]))
    return record["value"]


@lru_cache(maxsize=None)
def _recorded() -> dict[str, Registry]:
    """kind -> its entries as the checked-in file records them."""
    out = {}
    for kind, names in json.loads(PATH.read_text()).items():
        out[kind] = Registry(kind)
        for name, record in names.items():
            out[kind].register(name, _entry(record))
    return out


def entries(kind: str) -> Registry:
    """The entries of ``kind`` as validation sees them (see the module docstring)."""
    live = REGISTRIES.get(kind)
    if loaded():
        if live is None:
            raise ValueError(f"unknown registry kind '{kind}'; choose one of: {', '.join(REGISTRIES)}")
        return live
    recorded = _recorded()
    if not live:
        if kind not in recorded:
            raise ValueError(f"unknown registry kind '{kind}'; choose one of: {', '.join(recorded)}")
        return recorded[kind]
    view = Registry(kind)
    for name, obj in {**recorded.get(kind, {}), **live}.items():
        view.register(name, obj)
    return view


def write(path: Path = PATH) -> None:
    path.write_text(json.dumps(build(), indent=1) + "\n")


__all__ = ["entries", "build", "write", "PATH", "REGENERATE"]

if __name__ == "__main__":
    write()
    print(f"wrote {PATH}")
