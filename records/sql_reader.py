"""A tracking store in a SQL database (``sqlite:///``, ``postgresql://``), read with the database's own driver
through MLflow's schema (tables ``experiments``, ``runs``, ``tags``, ``params``, ``latest_metrics``,
``metrics``): what ``MlflowClient`` returns for these reads, without importing MLflow or SQLAlchemy.

SQLite is opened read-only, so that a read never creates or migrates a store. A metric MLflow stored as NaN
has ``is_nan`` set (its value is 0); it stores +/-inf as +/-1.797e308 and gives that back, as this does.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

from .reader import ACTIVE, ArtifactsOnDisk, MetricPoint, Reader, Run, RunData, RunInfo, StoreError

CONNECT_TIMEOUT_S = 5
CHUNK = 500  # run ids per ``IN (...)`` list (SQLite allows 32766 variables, older builds 999)
RUN_COLUMNS = "r.run_uuid, r.experiment_id, r.name, r.status, r.start_time, r.end_time, r.artifact_uri, r.lifecycle_stage"
# MlflowClient.search_runs' order under ``order_by=["attributes.start_time DESC"]``: runs without a start time last
ORDER = "ORDER BY (CASE WHEN r.start_time IS NULL THEN 1 ELSE 0 END), r.start_time DESC, r.run_uuid"


def connect_sqlite(path: Path):
    """The file, read-only: a missing file is an error here instead of a new empty store."""
    return sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=CONNECT_TIMEOUT_S)


def connect_postgres(uri: str):
    """libpq with a connect timeout; it takes the password from $PGPASSWORD or ~/.pgpass
    (``search.credentials`` keeps it out of the URI)."""
    import psycopg2  # the optional [cluster] dependency: only a PostgreSQL store needs it

    dsn = "postgresql://" + uri.split("://", 1)[1]  # libpq knows no SQLAlchemy driver suffix
    connection = psycopg2.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S)
    connection.set_session(readonly=True, autocommit=True)
    return connection


class SqlReader(ArtifactsOnDisk, Reader):
    """MLflow's SQL schema read with a DB-API connection (``qmark`` for sqlite3, ``format`` for psycopg2)."""

    def __init__(self, uri: str, connection, placeholder: str, errors: type[Exception]):
        super().__init__(uri)
        self.uri, self.connection, self.mark, self.errors = uri, connection, placeholder, errors

    @classmethod
    def sqlite(cls, uri: str, path: Path) -> "SqlReader":
        return cls(uri, connect_sqlite(path), "?", sqlite3.Error)

    @classmethod
    def postgres(cls, uri: str) -> "SqlReader":
        import psycopg2

        return cls(uri, connect_postgres(uri), "%s", psycopg2.Error)

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            with closing(self.connection.cursor()) as cursor:
                cursor.execute(sql.replace("?", self.mark), args)
                return cursor.fetchall()
        except self.errors as e:  # a file or database that holds no MLflow store (or not one we can read)
            cause = " ".join(str(e).split())[:200]
            raise StoreError(f"cannot read the MLflow store {self.uri}: {cause}") from None

    def runs_tagged(self, tags, *, experiment_id=None, max_results=None):
        where, args = [f"r.lifecycle_stage = '{ACTIVE}'", f"e.lifecycle_stage = '{ACTIVE}'"], []
        for key, value in tags.items():
            where.append("EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ? AND t.value = ?)")
            args += [key, value]
        if experiment_id is not None:
            where.append("r.experiment_id = ?")
            args.append(int(experiment_id))
        limit = f" LIMIT {int(max_results)}" if max_results else ""
        rows = self._rows(f"SELECT {RUN_COLUMNS} FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
                          f"WHERE {' AND '.join(where)} {ORDER}{limit}", tuple(args))
        return self._complete(rows)

    def get_run(self, run_id):
        rows = self._rows(f"SELECT {RUN_COLUMNS} FROM runs r WHERE r.run_uuid = ?", (run_id,))
        if not rows:
            raise StoreError(f"no run {run_id} in {self.uri}")
        return self._complete(rows)[0]

    def artifact_uri(self, run_id):
        rows = self._rows("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,))
        if not rows:
            raise StoreError(f"no run {run_id} in {self.uri}")
        return rows[0][0]

    def _complete(self, rows: list[tuple]) -> list[Run]:
        """The runs of these ``runs`` rows with their tags, params and latest metrics (one query per table)."""
        ids = [r[0] for r in rows]
        tags, params, metrics = ({i: {} for i in ids} for _ in range(3))
        for start in range(0, len(ids), CHUNK):
            chunk = tuple(ids[start:start + CHUNK])
            marks = ", ".join("?" * len(chunk))
            for run_id, key, value in self._rows(f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", chunk):
                tags[run_id][key] = value
            for run_id, key, value in self._rows(f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({marks})",
                                                 chunk):
                params[run_id][key] = value
            for run_id, key, value, is_nan in self._rows(
                    f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({marks})", chunk):
                metrics[run_id][key] = float("nan") if is_nan else float(value)
        return [Run(RunInfo(run_id, str(experiment), name or "", status, start, end, artifact_uri, stage),
                    RunData(tags[run_id], params[run_id], metrics[run_id]))
                for run_id, experiment, name, status, start, end, artifact_uri, stage in rows]

    def metric_history(self, run_id, key):
        rows = self._rows("SELECT value, is_nan, timestamp, step FROM metrics WHERE run_uuid = ? AND key = ? "
                          "ORDER BY timestamp, step, value", (run_id, key))
        return [MetricPoint(key, float("nan") if is_nan else float(value), int(ts), int(step))
                for value, is_nan, ts, step in rows]
