"""MLflow: one MLflow run per reglab run, found again by its tag `reglab.run_hash`.

Store: `logging.mlflow.tracking_uri`, by default `sqlite:///<results root>/mlflow.db`, one
database for every run under the root (MLflow 3 refuses to create file stores);
`mlflow ui --backend-store-uri sqlite:///runs/mlflow.db` shows it. Experiment: the config's
name (the sweep's) unless `logging.mlflow.experiment` names one. Params: the flattened config;
tags: the run's hash, setting, name, seed, directory and, at the end, status.

Resume. MLflow cannot delete metric points, so nothing is rewritten. Each start finds the run
by its hash tag (creating it the first time), marks it RUNNING again and reads, from the
history of `step/epoch` and `eval/epoch` (every row carries its epoch), the last step of each
kind of row it holds. A block of rows is one `log_batch`, one database transaction, so a row
is there whole or not at all. Rows past those steps are logged; rows missing before the
checkpoint are taken from the run's logs (reglab.tracking.base). So every step is logged
once, and a row logged before a kill keeps its values (a resumed run recomputes the same ones).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..observers import RunInfo
from .base import EVAL, STEP, Held, TrackerObserver, as_text, final_scalars, flat_config, scalars

MAX_METRICS = 1000
MAX_PARAMS = 100
"""MLflow's limits on one log_batch."""


def default_uri(root: Path) -> str:
    return f"sqlite:///{(Path(root) / 'mlflow.db').resolve()}"


class MLflowObserver(TrackerObserver):
    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None):
        """`tracking_uri`: None for `sqlite:///<results root>/mlflow.db`; `experiment`: None
        for the config's name."""
        super().__init__()
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.client: Any = None
        self.run_id = ""

    def open(self, run: RunInfo, resumed_step: int) -> Held:
        from mlflow.tracking import MlflowClient

        assert self.labels is not None
        uri = self.tracking_uri or default_uri(run.path.parent)
        tags = {**self.labels.tags(), "reglab.run_dir": str(run.path)}
        with _store_lock(uri), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # SQLAlchemy's, about MLflow's code
            self.client = MlflowClient(tracking_uri=uri)
            experiment_id = self._experiment_id(self.experiment or run.name, uri)
            found = self.client.search_runs(
                [experiment_id],
                filter_string=f"tags.`reglab.run_hash` = '{run.hash}'",
                order_by=["attributes.start_time ASC"],
                max_results=1,
            )
            if found:
                self.run_id = found[0].info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
                present = found[0].data.params
                held = Held(self._last_step(f"{STEP}/epoch"), self._last_step(f"{EVAL}/epoch"))
            else:
                self.run_id = self.client.create_run(
                    experiment_id, run_name=self.labels.run_name, tags=tags
                ).info.run_id
                present = {}
                held = Held()
        params = {k: as_text(v) for k, v in flat_config(run.config).items() if k not in present}
        self._log_params(params)
        return held

    def write(self, kind: str, rows: list[dict]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch: list[Metric] = []
        for row in rows:
            metrics = [Metric(k, v, now, row["step"]) for k, v in scalars(row, kind).items()]
            if batch and len(batch) + len(metrics) > MAX_METRICS:  # whole rows in each batch
                self.client.log_batch(self.run_id, metrics=batch)
                batch = []
            batch += metrics
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def write_finish(self, summary: dict) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), summary.get("steps", 0)
        metrics = [Metric(k, v, now, step) for k, v in final_scalars(summary).items()]
        for i in range(0, len(metrics), MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + MAX_METRICS])
        self.client.set_tag(self.run_id, "reglab.status", str(summary.get("status")))

    def end(self, finished: bool) -> None:
        if self.client is not None and self.run_id:
            # KILLED: stopped, failed or interrupted; the reglab run resumes where it left off
            self.client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")
        self.client = None

    def _experiment_id(self, name: str, uri: str) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        artifacts = _sqlite_path(uri)
        location = (artifacts.parent / "mlartifacts").resolve().as_uri() if artifacts else None
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except MlflowException:  # created meanwhile by another process on another store lock
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return str(exp.experiment_id)

    def _last_step(self, key: str) -> int:
        return max((m.step for m in self.client.get_metric_history(self.run_id, key)), default=-1)

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS])


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialize opening a SQLite store: MLflow creates its tables on first use, and two
    processes doing that at once (a sweep's workers) collide."""
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
