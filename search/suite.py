"""``search suite run NAME``: run every study of a suite (``spaces/suites/NAME.yaml``) as the search
``<suite>-<study>``, resumably: a search already finished is skipped, one left unfinished is resumed."""

from __future__ import annotations

from pathlib import Path

import records
from records.states import SearchState
from spaces.suite import load_suite, search_name, study_file

from .runner import RUNS_DIR, resume_search, start_search


def run_suite(name: str, *, tracking_uri: str | None = None, runs_dir: str | Path = RUNS_DIR,
              address: str | None = None, quiet: bool = False, log=print) -> list[str]:
    """Run (or resume, or skip) each study's search; returns the search names."""
    suite = load_suite(name)
    names = []
    for study in suite.studies:
        search = search_name(suite, study)
        names.append(search)
        try:
            state = records.search_info(search, tracking_uri).state
        except records.SearchNotFound:
            state = None
        if state == SearchState.FINISHED:
            log(f"{search}: finished, skipped")
            continue
        if state is not None:
            log(f"{search}: {state}, resuming")
            resume_search(search, runs_dir=runs_dir, address=address, quiet=quiet, tracking_uri=tracking_uri)
            continue
        log(f"{search}: running {study_file(study)}")
        start_search(study_file(study), tracking_uri=tracking_uri, address=address, name=search, runs_dir=runs_dir,
                     quiet=quiet)
    return names


__all__ = ["run_suite"]
