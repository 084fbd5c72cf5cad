"""What every stage task shares: the cache-keyed run against the artifact store, and publishing
the stage summary as a keyed Prefect artifact.

A stage's cache key is hash(stage name, stage config, parent artifact ids, code version), where the
code version digests the source files the stage runs. If the store already holds an artifact for
the key, the stage is skipped and that artifact returned. Otherwise `build(out_dir, summary, work)`
fills a temporary directory that the store seals and renames into place.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging import get_run_logger
from pydantic import BaseModel

from r1flow.data.store import ArtifactKind, ArtifactRef, ArtifactStore, source_hash, stable_hash

Build = Callable[[Path, dict, Path], None]


def in_prefect() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def log(msg: str) -> None:
    if in_prefect():
        get_run_logger().info(msg)
    else:
        print(msg, flush=True)


def code_version(*modules: ModuleType) -> str:
    return source_hash([Path(m.__file__) for m in modules])


def cache_key(stage: str, config: BaseModel | dict, parents: list[ArtifactRef], version: str) -> str:
    cfg = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    return stable_hash({"stage": stage, "config": cfg, "parents": [p.id for p in parents], "code": version})


class StageNotCached(RuntimeError):
    """A stage before --from has no artifact for the current recipe."""


def run_stage(store: ArtifactStore, *, stage: str, kind: ArtifactKind, config: BaseModel | dict,
              parents: list[ArtifactRef], modules: list[ModuleType], build: Build,
              mode: str = "run") -> ArtifactRef:
    """mode: "run" (reuse a cached artifact or compute), "force" (recompute), "cached" (reuse or fail)."""
    if mode not in ("run", "force", "cached"):
        raise ValueError(f"unknown stage mode {mode!r}")
    version = code_version(*modules)
    key = cache_key(stage, config, parents, version)
    with store.lock(key, on_wait=lambda: log(f"[{stage}] another run is computing this stage; waiting for it")):
        return _run_locked(store, stage=stage, kind=kind, config=config, parents=parents, version=version,
                           key=key, build=build, mode=mode)


def _run_locked(store: ArtifactStore, *, stage: str, kind: ArtifactKind, config: BaseModel | dict,
                parents: list[ArtifactRef], version: str, key: str, build: Build, mode: str) -> ArtifactRef:
    if mode != "force" and (ref := store.lookup(key)) is not None:
        log(f"[{stage}] cached: artifact {ref.id[:12]} (key {key[:12]})")
        return ref
    if mode == "cached":
        raise StageNotCached(f"stage {stage!r} comes before --from but the store {store.root} has no artifact "
                             f"for it with this recipe; run it first (drop --from) or start from an earlier stage")
    cfg = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    t0 = time.perf_counter()
    work = store.work_dir(key)
    with store.write(stage=stage, kind=kind, config=cfg, parents=[p.id for p in parents], code_version=version,
                     cache_key=key) as (out, summary):
        build(out, summary, work)
        summary["seconds"] = round(time.perf_counter() - t0, 2)
    store.clear_work(key)
    ref = store.lookup(key)
    assert ref is not None
    log(f"[{stage}] wrote artifact {ref.id[:12]} in {summary['seconds']:.1f}s: {ref.path}")
    publish_summary(stage, ref, store.manifest(ref.id).summary)
    publish_card(store, ref, parents)
    publish_asset(stage, kind, ref, parents)
    return ref


def asset_uri(ref: ArtifactRef) -> str:
    """An artifact's Prefect asset key: the URI of its content-addressed directory (remote for an
    fsspec store)."""
    return ref.uri or Path(ref.path).resolve().as_uri()


def publish_asset(stage: str, kind: str, ref: ArtifactRef, parents: list[ArtifactRef]) -> None:
    """Record the new artifact as a Prefect asset materialized from its parents' assets (the same
    events a `@materialize` task emits; its key is only known once the content is hashed)."""
    if not in_prefect():
        return
    from prefect.assets import Asset
    from prefect.assets.core import AssetProperties
    from prefect.context import AssetContext
    from prefect.states import Completed

    out = Asset(key=asset_uri(ref), properties=AssetProperties(
        name=f"{stage} {ref.id[:12]}", description=f"r1flow {kind} artifact of stage {stage}"))
    trc = TaskRunContext.get()
    ctx = AssetContext(downstream_assets={out}, direct_asset_dependencies={Asset(key=asset_uri(p)) for p in parents},
                       materialized_by="r1flow", task_run_id=trc.task_run.id if trc else None)
    ctx.emit_events(Completed())


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def publish_summary(stage: str, ref: ArtifactRef, summary: dict) -> None:
    if not in_prefect():
        return
    table = [{"metric": k, "value": _fmt(v)} for k, v in summary.items() if not isinstance(v, (list, dict))]
    create_table_artifact(key=artifact_key("r1flow", stage, "summary"), table=table,
                          description=f"**{stage}** -> artifact `{ref.id[:12]}` at `{ref.path}`")


def publish_card(store: ArtifactStore, ref: ArtifactRef, parents: list[ArtifactRef]) -> None:
    """The stage card (data/lineage.py): inputs, output files and tables, summary, with links."""
    if not in_prefect():
        return
    from r1flow.data.lineage import card_markdown

    md = card_markdown(store.manifest(ref.id), ref.uri or asset_uri(ref),
                       [(store.manifest(p.id), p.uri or asset_uri(p)) for p in parents])
    publish_markdown(f"r1flow-{ref.stage}-card", md, f"{ref.stage}: what went in and what came out")


def publish_markdown(key: str, markdown: str, description: str) -> None:
    if in_prefect():
        create_markdown_artifact(key=artifact_key(key), markdown=markdown, description=description)


def publish_table(key: str, rows: list[dict], description: str) -> None:
    if in_prefect():
        create_table_artifact(key=artifact_key(key), table=[{k: _fmt(v) for k, v in r.items()} for r in rows],
                              description=description)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return v


class Progress:
    """A Prefect progress artifact (in the UI) that long stages update, plus a console line."""

    def __init__(self, stage: str, total: int):
        self.stage, self.total, self.id = stage, total, None
        if in_prefect():
            from prefect.artifacts import create_progress_artifact

            self.id = create_progress_artifact(progress=0.0, key=artifact_key("r1flow", stage, "progress"),
                                               description=f"{stage}: progress")

    def update(self, done: int) -> None:
        if self.id is not None:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(artifact_id=self.id, progress=100.0 * min(done, self.total) / self.total)


