"""The record layer: the MLflow schema of searches, read and written in one place.

``search/`` (which writes the records) and ``analysis/`` (which reads them) both import this
package and never each other. ``schema`` names tags and holds the read queries, ``reader`` (with
``sql_reader`` and ``rest_reader``) reads a store without importing MLflow, ``writer`` writes runs through
MLflow's client (only writers import it), ``states`` decides trial states, ``table`` is the one trial table,
the one best trial and the one ``best.yaml``. Importing this package imports no MLflow.
"""

from .schema import (
    BEST_CHECKPOINT,
    BEST_MODEL,
    DEFAULT_TRACKING_URI,
    ROLE,
    SEARCH,
    STATE,
    TRIAL_ID,
    StoreNotFound,
    best_key,
    child_runs,
    find_parent,
    tracking_uri,
)
from .states import OUTCOMES, RANKABLE, Outcome, SearchState, TrialState, TrialTracker, decide, outcome, parse_search_state
from .table import (
    FEASIBLE,
    NoScore,
    RecordError,
    SearchInfo,
    SearchNotFound,
    at_common_epoch,
    best_row,
    best_trial_record,
    display,
    download_checkpoint,
    download_report_file,
    histories,
    list_searches,
    rank,
    reader_for,
    reproduction_seeds,
    reproductions,
    search_info,
    trials,
    typed_param,
)

__all__ = [
    "BEST_CHECKPOINT", "BEST_MODEL", "DEFAULT_TRACKING_URI", "ROLE", "SEARCH", "STATE", "TRIAL_ID", "StoreNotFound",
    "best_key", "child_runs", "find_parent", "tracking_uri", "OUTCOMES", "RANKABLE", "Outcome",
    "SearchState", "parse_search_state", "TrialState", "TrialTracker",
    "decide", "outcome", "NoScore", "RecordError", "SearchInfo", "SearchNotFound", "at_common_epoch", "best_trial_record",
    "best_row", "display", "download_checkpoint", "histories", "list_searches", "rank", "reproductions",
    "reproduction_seeds", "reader_for", "FEASIBLE", "download_report_file",
    "search_info", "trials", "typed_param",
]
