"""What every stage task shares: the node a run makes, the cache-keyed run against the artifact
store, and publishing the stage summary, card and asset to Prefect.

A node is one artifact of a run: a stage applied to one configuration (most stages make one; stage 9
one per student, evaluate one per checkpoint). Its cache key is hash(stage name, recorded config,
parent artifact ids, code version), where the code version is computed from the import closure of the
stage's build function (r1flow/code_version.py). If the store already holds an artifact for the key,
the stage is skipped and that artifact returned. Otherwise the build function fills a temporary
directory that the store seals and renames into place. Which nodes a recipe has, and in what order,
is r1flow/stages.py's business; this module knows no stage by name.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging import get_run_logger
from pydantic import BaseModel

from r1flow.code_version import code_version
from r1flow.data.store import ArtifactKind, ArtifactRef, ArtifactStore, stable_hash
from r1flow.models.train import tracking

# run: reuse a cached artifact or compute; force: recompute; cached: reuse or fail (before --from).
StageMode = Literal["run", "force", "cached"]


@dataclass(frozen=True)
class Node:
    """One artifact a run makes."""

    key: str  # "r1_zero", "distill:qwen2_s", "evaluate:base": unique within a run
    stage: str
    config: Any  # what the build function runs: the recipe section (a pydantic model)
    parents: dict[str, str] = field(default_factory=dict)  # role -> parent node key, in manifest order
    record: Any = None  # what the cache key and the manifest record; None: `config`
    label: str = ""  # names progress/curve artifacts and plot titles; "": the stage name

    @property
    def recorded(self):
        return self.config if self.record is None else self.record

    @property
    def name(self) -> str:
        return self.label or self.stage


@dataclass
class BuildContext:
    """What a build function gets: its node, its parents' artifacts by role, the directory to fill
    (sealed into the artifact), the summary to record, a work directory that survives a crash (for
    resuming), and the store (to read manifests)."""

    node: Node
    parents: dict[str, ArtifactRef]
    out: Path
    summary: dict
    work: Path
    store: ArtifactStore


Build = Callable[[BuildContext], None]


def in_prefect() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def log(msg: str) -> None:
    if in_prefect():
        get_run_logger().info(msg)
    else:
        print(msg, flush=True)


def cache_key(stage: str, config: BaseModel | dict, parents: list[ArtifactRef], version: str) -> str:
    cfg = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    return stable_hash({"stage": stage, "config": cfg, "parents": [p.id for p in parents], "code": version})


class StageNotCached(RuntimeError):
    """A stage before --from has no artifact for the current recipe."""


def node_key(node: Node, build: Build, refs: dict[str, ArtifactRef]) -> tuple[str, str]:
    """(cache key, code version) of `node` once its parents' artifacts are `refs` (node key -> ref)."""
    version = code_version(build.__module__)
    return cache_key(node.stage, node.recorded, [refs[k] for k in node.parents.values()], version), version


def run_node(store: ArtifactStore, node: Node, kind: ArtifactKind, build: Build, refs: dict[str, ArtifactRef],
             mode: StageMode = "run") -> ArtifactRef:
    """Reuse or compute `node`'s artifact; `refs` maps node keys to artifacts and holds its parents."""
    if mode not in ("run", "force", "cached"):
        raise ValueError(f"unknown stage mode {mode!r}")
    parents = {role: refs[k] for role, k in node.parents.items()}
    key, version = node_key(node, build, refs)
    with store.lock(key, on_wait=lambda: log(f"[{node.key}] another run is computing this stage; waiting for it")):
        return _run_locked(store, node=node, kind=kind, parents=parents, version=version, key=key,
                           build=lambda out, summary, work: build(BuildContext(node, parents, out, summary, work,
                                                                               store)),
                           mode=mode)


def _run_locked(store: ArtifactStore, *, node: Node, kind: ArtifactKind, parents: dict[str, ArtifactRef],
                version: str, key: str, build: Callable[[Path, dict, Path], None], mode: StageMode) -> ArtifactRef:
    stage, config, parents = node.stage, node.recorded, list(parents.values())
    if mode != "force" and (ref := store.lookup(key)) is not None:
        log(f"[{node.key}] cached: artifact {ref.id[:12]} (key {key[:12]})")
        return ref
    if mode == "cached":
        raise StageNotCached(f"stage {stage!r} comes before --from but the store {store.root} has no artifact "
                             f"for it with this recipe; run it first (drop --from) or start from an earlier stage")
    cfg = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    t0 = time.perf_counter()
    work = store.work_dir(key)
    with store.write(stage=stage, kind=kind, config=cfg, parents=[p.id for p in parents], code_version=version,
                     cache_key=key) as (out, summary):
        # A tracker run for each training stage (checkpoints), when the recipe's `tracking` names a backend.
        with tracking.stage_run(node.key, key, enabled=kind == "checkpoint") as run:
            build(out, summary, work)
        if run is not None:
            summary["tracking"] = run.info()
        summary["seconds"] = round(time.perf_counter() - t0, 2)
    store.clear_work(key)
    ref = store.lookup(key)
    assert ref is not None
    if run is not None:
        run.tag_artifact(ref.id)
    log(f"[{node.key}] wrote artifact {ref.id[:12]} in {summary['seconds']:.1f}s: {ref.path}")
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


def imported(b: BuildContext, use: str = "prompts") -> dict[str, list[dict]]:
    """Rows of every imported source among a node's parents (role `data:NAME`, tasks/data_import.py),
    by source name."""
    from r1flow.data.schemas import read_rows
    from r1flow.data.sources import IMPORT_FILES

    file, schema = IMPORT_FILES[use]
    return {role.split(":", 1)[1]: read_rows(ref.file(file), schema)
            for role, ref in b.parents.items() if role.startswith("data:")}


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
