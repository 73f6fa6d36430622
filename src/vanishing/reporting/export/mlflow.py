"""Run records as MLflow runs in a local store (`MLflowTarget`): an experiment ("vanishing"),
one MLflow run per run, named by its label, with config.json as params and every tag of
`tags.scalars` as a metric at its step.

The store is a sqlite database (`sqlite:///PATH`, the default `sqlite:///DIR/mlflow.db`: what
MLflow 3 itself runs locally) or a file store (a directory, or a `file:` URI), which MLflow 3
keeps in maintenance mode and refuses unless MLFLOW_ALLOW_FILE_STORE=true: the export sets it
for its own calls alone, and says to set it for `mlflow ui`. Any other URI (a tracking server,
http(s)://, databricks, a database server) is refused before anything is opened: nothing
contacts a server.

The metrics go in `log_batch` calls of up to MLflow's 1000 values, the params in calls of 100.
A run exported again replaces its earlier MLflow run (found by the tag `vanishing.key`; the old
one is deleted, as the UI deletes, until `mlflow gc` purges it). The report's verdict is the
run's description (the tag `mlflow.note.content`). A data-parallel run's ranks (D/rank{r})
are child runs of D's (the tag `mlflow.parentRunId`, which the UI nests), with no verdict of
their own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from vanishing.errors import UsageError
from vanishing.reporting.export.tags import row_step, scalars
from vanishing.reporting.export.target import Run, environment

STORE = "mlflow.db"  # the default store, a sqlite database in the first directory given
EXPERIMENT = "vanishing"
ARTIFACTS = "mlartifacts"  # a new experiment's artifact root, beside the database (as `mlflow
# server` puts it) rather than MLflow's default ./mlruns in whatever directory the export ran
# MLflow's limits (mlflow.utils.validation): per log_batch call, and a param's length.
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
PARAM_LENGTH = 6000
# Run statuses: a run that ended (ok, diverged: the verdict says which) finished; unfinished
# records (stopped, or still training) are a run that did not end.
STATUS = {"ok": "FINISHED", "diverged": "FINISHED", "failed": "FAILED", "unfinished": "KILLED"}
# What MLflow reads as a Databricks workspace, though it has no scheme.
DATABRICKS = ("databricks", "databricks-uc", "uc")
# Characters MLflow allows in a metric or param key; any other becomes "_".
NOT_IN_KEY = re.compile(r"[^\w\-. :/]")


def import_client() -> Any:
    """mlflow's MlflowClient, imported with its telemetry off (`quiet_store`); a UsageError
    saying how to install it when it is missing."""
    with quiet_store("sqlite"):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UsageError(
                "mlflow export needs the optional extra: pip install 'vanishing[mlflow]'"
            ) from None
        try:
            from mlflow.telemetry.client import set_telemetry_client
        except ImportError:  # an MLflow before 3 has no telemetry
            return MlflowClient
        set_telemetry_client()  # mlflow imported earlier with telemetry on: now off
    return MlflowClient


def local_store(uri: str) -> tuple[str, Path]:
    """("sqlite" or "file", the database file or store directory) of a local store's URI; a
    UsageError for a URI that names a server (a tracking server, Databricks, a database
    server) or anything else."""
    parsed = urlparse(uri)
    if uri.startswith("sqlite:///") and parsed.path.strip("/") and not parsed.query:
        return "sqlite", Path(unquote(uri[len("sqlite:///") :]))
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost") and parsed.path:
        return "file", Path(unquote(parsed.path))
    if not parsed.scheme and uri.strip() and uri not in DATABRICKS:
        return "file", Path(uri)
    raise UsageError(
        f"--uri {uri}: not a local MLflow store; give sqlite:///PATH (a database file) or a "
        "directory (a file store): the export contacts no server"
    )


@contextlib.contextmanager
def quiet_store(kind: str) -> Iterator[None]:
    """While the export imports and calls MLflow: its usage telemetry off (MLflow 3 fetches a
    configuration from its server at import, and sends events, unless told not to), a file
    store allowed (MLflow 3 refuses one unless MLFLOW_ALLOW_FILE_STORE=true), MLflow's and
    alembic's INFO lines (creating the database's tables) kept off the terminal, and MLflow's
    retries of a database it cannot open (10 tries over 100 s, a warning each: a local file
    that fails once fails again) down to one; all put back as they were."""
    values = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    if kind == "file":
        values["MLFLOW_ALLOW_FILE_STORE"] = "true"
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    retries: Any = sys.modules.get("mlflow.store.db.utils")
    before = getattr(retries, "MAX_RETRY_COUNT", None)
    if retries is not None and before is not None:
        retries.MAX_RETRY_COUNT = 1  # no retry loop with a warning a try: a local file fails
    try:
        with environment(values):
            yield
    finally:
        if retries is not None and before is not None:
            retries.MAX_RETRY_COUNT = before
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def store_refused(kind: str, path: Path) -> str | None:
    """Why the local store at `path` cannot be used, checked before MLflow opens it (MLflow
    itself retries a database it cannot open for over a minute, printing each try); None when
    it can. A sqlite database: a regular file or absent, in an existing writable directory, and
    if there, a database sqlite reads. A file store: a directory or absent, likewise. A file
    store's directory is made here."""
    if kind == "sqlite" and path.is_dir():
        return f"{path} is a directory, not a database file"
    if path.exists() and not (path.is_file() if kind == "sqlite" else path.is_dir()):
        return f"{path} is not a {'regular file' if kind == 'sqlite' else 'directory'}"
    folder = path.parent
    if not folder.exists():
        return f"no such directory: {folder}"
    if not folder.is_dir():
        return f"{folder} is not a directory"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder}: permission denied"
    if path.exists() and not os.access(
        path, os.R_OK | os.W_OK | (0 if kind == "sqlite" else os.X_OK)
    ):
        return f"{path}: permission denied"
    if kind == "file":
        try:
            path.mkdir(exist_ok=True)
        except OSError as e:
            return str(e.strerror or e)
        return None
    if path.exists():
        try:
            with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True)) as db:
                db.execute("PRAGMA schema_version").fetchall()
        except sqlite3.Error as e:
            return str(e).splitlines()[0] if str(e).strip() else type(e).__name__
    return None


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """config.json as MLflow params: nested keys joined by ".", a string as it is, any other
    value as JSON; a value longer than MLflow takes cut short with "..."."""
    params: dict[str, str] = {}
    for key, value in config.items():
        name = NOT_IN_KEY.sub("_", f"{prefix}{key}")
        if isinstance(value, dict) and value:
            params.update(flat_params(value, f"{name}."))
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        params[name] = text if len(text) <= PARAM_LENGTH else text[: PARAM_LENGTH - 3] + "..."
    return params


def metrics(run: Run, timestamp: int) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp, step) of every tag of every row, in record order."""
    config = run.records.recorded
    found = []
    for row in run.records.metrics:
        step = row_step(row)
        if step is not None:
            for tag, value in scalars(config, row):
                found.append((NOT_IN_KEY.sub("_", tag), value, timestamp, step))
    return found


class MLflowTarget:
    """An experiment of a local MLflow store, opened once for all the runs."""

    def __init__(self, uri: str, kind: str, experiment: str, client: Any, entities: Any) -> None:
        self.where, self.kind, self.experiment = uri, kind, experiment
        self.client, self.entities = client, entities
        self.ids: dict[str, str] = {}  # the MLflow run id of each run written, by its key
        with quiet_store(kind):
            found = client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found is not None else None

    @classmethod
    def open(cls, first: Path, uri: str | None, experiment: str | None) -> MLflowTarget:
        """The store `uri` (default sqlite:///FIRST/mlflow.db); a UsageError for a remote URI, a
        missing extra, or a store that cannot be used (`store_refused`), before MLflow opens
        it."""
        kind, path = local_store(uri if uri is not None else f"sqlite:///{first / STORE}")
        if experiment is not None and not experiment.strip():
            raise UsageError("--experiment: give a name")
        path = path.resolve()  # MLflow is handed the store's absolute path, never the text
        uri = f"sqlite:///{path}" if kind == "sqlite" else str(path)
        client_class = import_client()
        from mlflow import entities

        if kind == "sqlite":
            import mlflow.store.db.utils  # noqa: F401  (its retry count, held at 1 by quiet_store)

        reason = store_refused(kind, path)
        if reason is not None:
            raise UsageError(f"cannot write to the MLflow store {uri}: {reason}")
        with quiet_store(kind), cls.refused(uri):
            client = client_class(tracking_uri=uri if kind == "sqlite" else path.as_uri())
            return cls(uri, kind, experiment or EXPERIMENT, client, entities)

    @staticmethod
    @contextlib.contextmanager
    def refused(uri: str) -> Iterator[None]:
        """An error of the store (a database MLflow cannot open or write, a folder of a file
        store it cannot write) as one line."""
        from mlflow.exceptions import MlflowException
        from sqlalchemy.exc import SQLAlchemyError

        try:
            yield
        except MlflowException as e:
            reason = (str(e.message).strip().splitlines() or [type(e).__name__])[0]
            raise UsageError(f"cannot write to the MLflow store {uri}: {reason}") from None
        except SQLAlchemyError as e:
            reason = (str(getattr(e, "orig", None) or e).strip().splitlines() or [""])[0]
            raise UsageError(f"cannot write to the MLflow store {uri}: {reason}") from None
        except OSError as e:
            raise UsageError(f"cannot write to the MLflow store {uri}: {e.strerror or e}") from None

    def experiment_for_write(self) -> str:
        """The experiment's id, made at the first run written."""
        if self.experiment_id is None:
            location = None
            if self.kind == "sqlite":
                _, path = local_store(self.where)
                location = (path.parent / ARTIFACTS).as_uri()
            self.experiment_id = self.client.create_experiment(
                self.experiment, artifact_location=location
            )
        return self.experiment_id

    def write(self, run: Run) -> str:
        """One MLflow run: its earlier export deleted, params, metrics, verdict, status."""
        e = self.entities
        with quiet_store(self.kind), self.refused(self.where):
            experiment_id = self.experiment_for_write()
            earlier = self.client.search_runs(
                [experiment_id], filter_string=f"tags.`vanishing.key` = '{run.key}'"
            )
            for old in earlier:
                self.client.delete_run(old.info.run_id)
            tags = {
                "vanishing.key": run.key,
                "vanishing.name": run.name,
                "vanishing.run_dir": str(Path(run.records.path).resolve()),
                "mlflow.note.content": run.verdict(),
            }
            if run.parent is not None:  # a rank's run: a child of its combined run, nested
                tags["mlflow.parentRunId"] = self.ids[run.parent.key]
            created = self.client.create_run(experiment_id, run_name=run.label, tags=tags)
            run_id = created.info.run_id
            params = [e.Param(k, v) for k, v in flat_params(run.records.recorded).items()]
            for i in range(0, len(params), PARAMS_PER_BATCH):
                self.client.log_batch(run_id, params=params[i : i + PARAMS_PER_BATCH])
            values = [e.Metric(*m) for m in metrics(run, int(time.time() * 1000))]
            for i in range(0, len(values), METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=values[i : i + METRICS_PER_BATCH])
            self.client.set_terminated(run_id, status=STATUS.get(run.records.status, "FINISHED"))
        self.ids[run.key] = str(run_id)
        return str(run_id)

    def close(self) -> None:
        pass

    def written(self, count: int) -> str:
        where = f"the MLflow store {self.where}, experiment {self.experiment!r}"
        return f"{count} run(s) written to {where}"

    def open_with(self) -> str:
        allow = "MLFLOW_ALLOW_FILE_STORE=true " if self.kind == "file" else ""
        return f"open them with: {allow}mlflow ui --backend-store-uri {shlex.quote(self.where)}"
