"""Experiment tracking: TensorBoard and MLflow for every training stage (and W&B or trackio where TRL's
`report_to` offers them), off unless the recipe's `tracking` section names a backend.

One run of the pipeline is one experiment (`EXPERIMENT-RUN`, RUN the Prefect flow run's name or the start
time); each training stage node that computes is one run in it, named `NODE CACHEKEY12` and tagged with the node,
stage and cache key, then with the artifact id once the artifact is sealed; the artifact's summary records
the tracker's run (`tracking`), so each points at the other. Nothing here changes an artifact's cache
key: where a run's metrics go is not what it computes.

Who logs what:
- pretraining: loss, MTP loss, balance loss, lr, grad norm, expert load, tokens/s, MFU (`log`, rank 0;
  under torchrun the rank-0 process attaches to the stage's run through $R1FLOW_TRACKING);
- GRPO: r1flow's per-step metrics (rewards by component, accuracy, length, sync and generation
  seconds), plus TRL's own logs through `report_to`;
- SFT and the reward model: TRL's logs through `report_to` (TensorBoard's event files go to the stage's
  directory, MLflow into the stage's run, which is active when the trainer starts).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Backend = Literal["tensorboard", "mlflow", "wandb", "trackio"]
ENV = "R1FLOW_TRACKING"


class TrackingConfig(BaseModel):
    """Where training metrics go besides the artifacts; changes no artifact."""

    model_config = ConfigDict(extra="forbid")

    backends: list[Backend] = Field(default_factory=list, description=(
        "tensorboard, mlflow (every training stage), wandb, trackio (TRL's stages, through report_to). Empty: off."))
    dir: str = Field("./runs", description="TensorBoard event files: DIR/EXPERIMENT/NODE-CACHEKEY12/.")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI (default: sqlite:///DIR/mlflow.db; "
                                                     "or http://host:5000, file:..., databricks).")
    experiment: str | None = Field(None, description="Experiment name prefix (default: r1flow-RECIPE).")


def experiment_spec(cfg: TrackingConfig, recipe_name: str, run_name: str | None = None) -> dict | None:
    """What a pipeline run hands to each stage (None: tracking is off)."""
    if not cfg.backends:
        return None
    run_name = run_name or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    root = Path(cfg.dir).expanduser().resolve()
    return {"backends": list(cfg.backends), "dir": str(root),
            "mlflow_uri": cfg.mlflow_uri or f"sqlite:///{root / 'mlflow.db'}",
            "experiment": f"{cfg.experiment or 'r1flow-' + recipe_name}-{run_name}"}


_SPEC: dict | None = None  # the pipeline run's spec while a stage task runs (one stage per process at a time)
_CURRENT: StageRun | None = None


@contextmanager
def active(spec: dict | None) -> Iterator[None]:
    """Make `spec` the tracking of the stage nodes run inside (tasks/common.py opens their runs)."""
    global _SPEC
    prev, _SPEC = _SPEC, spec
    try:
        yield
    finally:
        _SPEC = prev


class EventWriter:
    """TensorBoard event files written with the `tensorboard` package's own event writer and protos.
    torch.utils.tensorboard.SummaryWriter does the same, but importing torch here would put torch's version
    into the cache key of every stage (tasks/common imports this module), the torch-free world included."""

    def __init__(self, log_dir: str):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._w = EventFileWriter(log_dir)

    def _add(self, value, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._w.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=[value])))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._add(Summary.Value(tag=tag, simple_value=value), step)

    def add_text(self, tag: str, text: str, step: int = 0) -> None:
        """What SummaryWriter.add_text writes: a string tensor for TensorBoard's text plugin."""
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
        from tensorboard.plugins.text.plugin_data_pb2 import TextPluginData

        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
            plugin_name="text", content=TextPluginData(version=0).SerializeToString()))
        tensor = TensorProto(dtype="DT_STRING", string_val=[text.encode()],
                             tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
        self._add(Summary.Value(tag=tag, metadata=meta, tensor=tensor), step)

    def flush(self) -> None:
        self._w.flush()

    def close(self) -> None:
        self._w.close()


class StageRun:
    """One stage node's run in the experiment: a TensorBoard writer and/or an MLflow run."""

    def __init__(self, spec: dict, node: str, cache_key: str, mlflow_run_id: str | None = None):
        self.spec, self.node, self.cache_key = spec, node, cache_key
        self.name = f"{node} {cache_key[:12]}"
        self.tb_dir = str(Path(spec["dir"]) / spec["experiment"] / f"{node.replace(':', '-')}-{cache_key[:12]}")
        self.writer = None
        self.mlflow_run_id = mlflow_run_id
        self._attached = mlflow_run_id is not None  # a torchrun rank logging into the parent's run
        backends = spec["backends"]
        if "tensorboard" in backends:
            self.writer = EventWriter(self.tb_dir)
        if "mlflow" in backends:
            import mlflow

            mlflow.set_tracking_uri(spec["mlflow_uri"])
            if not self._attached:
                mlflow.set_experiment(spec["experiment"])
                run = mlflow.start_run(run_name=self.name, tags={
                    "r1flow.node": node, "r1flow.stage": node.split(":")[0], "r1flow.cache_key": cache_key})
                self.mlflow_run_id = run.info.run_id

    def _client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.spec["mlflow_uri"])

    def env(self) -> dict[str, str]:
        """Environment for TRL's callbacks in this process and for the stage's subprocesses."""
        env = {ENV: json.dumps({"spec": self.spec, "node": self.node, "cache_key": self.cache_key,
                                "mlflow_run_id": self.mlflow_run_id})}
        if "tensorboard" in self.spec["backends"]:
            env["TENSORBOARD_LOGGING_DIR"] = self.tb_dir
        if "mlflow" in self.spec["backends"]:
            env |= {"MLFLOW_TRACKING_URI": self.spec["mlflow_uri"], "MLFLOW_EXPERIMENT_NAME": self.spec["experiment"]}
        return env

    def log(self, metrics: dict, step: int) -> None:
        scalars = {k: float(v) for k, v in metrics.items()
                   if k != "step" and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
        if not scalars:
            return
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
            self.writer.flush()
        if self.mlflow_run_id is not None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            # MLflow metric keys allow letters, digits, _ - . / and spaces
            self._client().log_batch(self.mlflow_run_id, metrics=[
                Metric(k.replace("@", "_at_"), v, now, step) for k, v in scalars.items()], synchronous=True)

    def info(self) -> dict:
        out = {"experiment": self.spec["experiment"], "run": self.name}
        if self.writer is not None:
            out["tensorboard"] = self.tb_dir
        if self.mlflow_run_id is not None:
            out |= {"mlflow_uri": self.spec["mlflow_uri"], "mlflow_run_id": self.mlflow_run_id}
        return out

    def close(self, status: str = "FINISHED") -> None:
        if self.writer is not None:
            self.writer.close()
        if self.mlflow_run_id is not None and not self._attached:
            import mlflow

            if mlflow.active_run() is not None and mlflow.active_run().info.run_id == self.mlflow_run_id:
                mlflow.end_run(status)
            else:
                self._client().set_terminated(self.mlflow_run_id, status)

    def tag_artifact(self, artifact_id: str) -> None:
        """After sealing: the run names the artifact it made."""
        if self.mlflow_run_id is not None:
            self._client().set_tag(self.mlflow_run_id, "r1flow.artifact_id", artifact_id)
        if "tensorboard" in self.spec["backends"]:
            w = EventWriter(self.tb_dir)
            w.add_text("r1flow/artifact_id", artifact_id)
            w.close()


@contextmanager
def stage_run(node: str, cache_key: str, enabled: bool = True) -> Iterator[StageRun | None]:
    """The run of one computing node, when the pipeline run tracks and `enabled` (else None); the
    environment TRL and the stage's subprocesses read points at it meanwhile."""
    global _CURRENT
    if _SPEC is None or not enabled:
        yield None
        return
    run = StageRun(_SPEC, node, cache_key)
    saved = {k: os.environ.get(k) for k in run.env()}
    os.environ.update(run.env())
    prev, _CURRENT = _CURRENT, run
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        _CURRENT = prev
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        run.close(status)


def current() -> StageRun | None:
    """The run metrics go to: the stage's, or in a stage's subprocess (torchrun rank 0) one attached to it."""
    global _CURRENT
    if _CURRENT is None and os.environ.get(ENV):
        d = json.loads(os.environ[ENV])
        _CURRENT = StageRun(d["spec"], d["node"], d["cache_key"], mlflow_run_id=d["mlflow_run_id"])
    return _CURRENT


def log(metrics: dict, step: int) -> None:
    """Log numeric metrics at `step` to the current run; nothing when tracking is off."""
    if (run := current()) is not None:
        run.log(metrics, step)


def report_to() -> list[str] | str:
    """TRL/transformers `report_to` for the current stage: its backends, or "none"."""
    if (run := current()) is None:
        return "none"
    return list(run.spec["backends"])
