"""MLflow: one run per cell in the experiment named after the suite (or `tracking.project`).

The store is $MLFLOW_TRACKING_URI where it is set (a server, a database), else a local file
store in RESULTS/logs/mlruns (`mlflow ui --backend-store-uri RESULTS/logs/mlruns`); its
folders are made without following a link, the files in them are MLflow's own. A resumed cell
continues the newest unfinished run with its cell id (tag `harness.cell_id`), logging only
steps past the last it holds, so no epoch appears twice.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from harness.app.trackers import TrackedRun, flat_config
from harness.fsio import make_folder

CELL_TAG = "harness.cell_id"
_PARAM_LIMIT = 6000  # characters MLflow keeps of a parameter's value


def open_run(run: TrackedRun) -> MlflowRun:
    return MlflowRun(run)


def tracking_uri(run: TrackedRun) -> str:
    """$MLFLOW_TRACKING_URI, else the local store under the results folder."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = run.logs / "mlruns"
    make_folder(store, inside=run.inside)
    return store.resolve().as_uri()


class MlflowRun:
    def __init__(self, run: TrackedRun) -> None:
        with warnings.catch_warnings():
            # MLflow 3 calls the file store deprecated; it is what works without a server.
            warnings.simplefilter("ignore", FutureWarning)
            self.client = MlflowClient(tracking_uri=tracking_uri(run))
            eid = self._experiment(run.project)
        self.last = 0
        found = self._unfinished(eid, run.cell_id) if run.resumed else None
        if found is not None:
            self.run_id = found
            self.client.update_run(found, status="RUNNING")
            for key in ("train_loss", "lr"):
                history = self.client.get_metric_history(found, key)
                self.last = max([self.last, *(m.step for m in history)])
            return
        created = self.client.create_run(
            eid,
            run_name=run.name,
            tags={CELL_TAG: run.cell_id, "harness.label": run.label},
        )
        self.run_id = created.info.run_id
        params = [Param(k, v[:_PARAM_LIMIT]) for k, v in flat_config(run.config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def _experiment(self, name: str) -> str:
        """The experiment's id, made if missing; workers sharing a store may race to make it."""
        for _ in range(2):
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return str(found.experiment_id)
            try:
                return str(self.client.create_experiment(name))
            except Exception:  # another worker made it meanwhile: read it again
                continue
        raise RuntimeError(f"MLflow experiment {name!r} could be neither found nor made")

    def _unfinished(self, eid: str, cell_id: str) -> str | None:
        runs = self.client.search_runs(
            [eid],
            filter_string=f"tags.`{CELL_TAG}` = '{cell_id}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if runs and runs[0].info.status != "FINISHED":
            return str(runs[0].info.run_id)
        return None

    def log(self, step: int, values: Mapping[str, float]) -> None:
        if step <= self.last:
            return  # logged by the segment before a kill: once is enough
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)
        self.last = step

    def finish(self, summary: Mapping[str, Any] | None) -> None:
        if summary is None:
            self.client.set_terminated(self.run_id, "KILLED")  # paused: a rerun resumes it
            return
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"run.{k}", float(v), now, self.last)
            for k, v in summary.items()
            if not isinstance(v, str)
        ]
        tags = [
            RunTag(f"run.{k}", v[:_PARAM_LIMIT]) for k, v in summary.items() if isinstance(v, str)
        ]
        self.client.log_batch(self.run_id, metrics=metrics, tags=tags)
        status = "FINISHED" if summary.get("status") in ("ok", "diverged") else "FAILED"
        self.client.set_terminated(self.run_id, status)
