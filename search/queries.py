"""Read searches back from MLflow for ``search ls``, ``search show`` and ``search export``.

Thin: the table, the best trial and ``best.yaml`` are the record layer's (``records``); this
module turns its lookup errors into ``SearchError`` (exit code 2).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import records
from records import schema
from spaces.exported import exported_from, write_exported

from . import driver
from .errors import SearchError


def settle_stale(uri: str | None, name: str | None = None) -> None:
    """Mark searches whose driver stopped writing its heartbeat as "driver lost" before they are shown.

    The heartbeats are read without MLflow; its client (a second of imports) is made only to write the mark.
    """
    try:
        reader = schema.reader_for(uri)
    except schema.StoreNotFound:
        return  # the record layer says so
    parents = [schema.find_parent(reader, name)] if name else schema.search_parents(reader)
    lost = [parent for parent in parents if parent is not None and driver.driver_lost(parent)]
    if lost:
        from records import writer  # the one write of a read command: only when a search needs settling

        client = writer.client_for(uri, must_exist=True)
        for parent in lost:
            driver.settle_stale(client, parent)


def list_searches(uri: str | None = None) -> pd.DataFrame:
    settle_stale(uri)
    try:
        return records.list_searches(uri)
    except records.RecordError as e:
        raise SearchError(str(e)) from None


def trials_table(name: str, uri: str | None = None) -> pd.DataFrame:
    """Every trial of a search, best first (``records.trials``)."""
    settle_stale(uri, name)
    try:
        return records.trials(name, uri)
    except records.RecordError as e:
        raise SearchError(str(e)) from None


def render(table: pd.DataFrame, top: int) -> str:
    """What ``search run`` and ``search show`` both print for a search's trials."""
    shown = min(top, len(table))
    return (f"top {shown} of {len(table)} trials of '{table.attrs['search']}' by {table.attrs['target']} "
            f"({table.attrs['mode']}):\n{records.display(table, top, extra=table.attrs.get('shown_metrics', ()))}")


def export_best(name: str, out: str | Path, uri: str | None = None) -> Path:
    """Write the best trial's configuration as YAML (``best.yaml``), ready for ``search reproduce``."""
    try:
        return write_exported(exported_from(records.best_trial_record(name, uri)), out)
    except records.RecordError as e:
        raise SearchError(str(e)) from None
