"""The r1flow DAG as Prefect flows: the whole pipeline, and one flow per stage. Wiring only: the
stages, their parents and which of them a run needs are declared in r1flow/stages.py.

A run computes the report (or the nodes of `until_stage`) and what they depend on, nothing else.
Nodes of stages before `from_stage` are not run: their artifacts must already be in the store for the
same recipe (each is looked up by its cache key). Stages named in `force` are recomputed even if
cached. Every other needed node reuses its cached artifact or runs.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NONE

from r1flow.data.lineage import mermaid_markdown
from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.models.train import tracking
from r1flow.recipe import Recipe
from r1flow.stages import STAGES, Stage, StageName, select
from r1flow.tasks.common import Node, StageMode, log, publish_markdown, run_node
from r1flow.tasks.plan import publish_plan


@task(cache_policy=NONE)
def stage_task(stage: Stage, node: Node, refs: dict[str, ArtifactRef], store_root: str,
               mode: StageMode, tracked: dict | None = None) -> ArtifactRef:
    """One node of the DAG (a Prefect task run named after it): reuse or build its artifact (its metrics
    going to the run's experiment when `tracked`), then show it in the UI."""
    store = ArtifactStore(store_root)
    with tracking.active(tracked):
        ref = run_node(store, node, stage.kind, stage.build, refs, mode)
    if stage.show is not None:
        stage.show(store, node, ref)
    return ref


def run_dag(recipe: Recipe, from_stage: str | None = None, until_stage: str | None = None,
            force: list[str] | tuple[str, ...] = ()) -> dict[str, ArtifactRef]:
    root = recipe.store_root()
    steps = select(recipe, from_stage, until_stage, force)
    tracked = tracking.experiment_spec(recipe.tracking, recipe.name, _flow_run_name())
    if tracked:
        log(f"[r1flow] tracking to {', '.join(tracked['backends'])}: experiment {tracked['experiment']}")
    refs: dict[str, ArtifactRef] = {}
    for step in steps:
        if step.mode is None:
            continue
        node, stage = step.node, STAGES[step.node.stage]
        parents = {k: refs[k] for k in node.parents.values()}
        refs[node.key] = stage_task.with_options(name=stage.name, task_run_name=node.key)(
            stage, node, parents, root, step.mode, tracked)
    skipped = [s for s in steps if s.mode is None]
    if skipped:
        log(f"[r1flow] skipped {len(skipped)} node(s): " + "; ".join(f"{s.node.key} ({s.why})" for s in skipped))
    publish_lineage(root, refs, recipe.name)
    publish_plan(recipe, root, refs, steps)
    for name, ref in refs.items():
        log(f"[r1flow] {name:<14} {ref.id[:12]}  {ref.path}")
    return refs


def _flow_run_name() -> str | None:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx.flow_run.name if ctx and ctx.flow_run else None


def publish_lineage(root: str, refs: dict[str, ArtifactRef], name: str) -> None:
    store = ArtifactStore(root)
    seen: dict[str, object] = {}
    for ref in refs.values():
        for m in store.ancestry(ref.id):
            seen.setdefault(m.id, m)
    if seen:
        publish_markdown("r1flow-lineage", mermaid_markdown(list(seen.values()), f"Lineage of this run ({name})"),
                         "Artifacts of this run and their parents")


def _recipe(recipe: Recipe, recipe_file: str | None) -> Recipe:
    if recipe_file is None:
        return recipe
    from r1flow.recipe import load_recipe

    return load_recipe(recipe_file)


@flow(name="r1flow-pipeline", log_prints=True)
def pipeline(recipe: Recipe = Recipe(), from_stage: StageName | None = None, until_stage: StageName | None = None,
             force: list[StageName] | None = None, recipe_file: str | None = None) -> dict[str, str]:
    """The DeepSeek-R1 recipe end to end. Returns node -> artifact path. `recipe_file` (a YAML
    path on the worker, e.g. configs/deepseek_r1.yaml in the GPU image) replaces `recipe`."""
    refs = run_dag(_recipe(recipe, recipe_file), from_stage, until_stage, force or [])
    return {k: v.path for k, v in refs.items()}


def _stage_flow(stage: Stage):
    name = stage.name

    def stage_flow(recipe: Recipe = Recipe(), force: bool = False, recipe_file: str | None = None) -> dict[str, str]:
        refs = run_dag(_recipe(recipe, recipe_file), name, name, [name] if force else [])
        return {k: v.path for k, v in refs.items()}

    stage_flow.__doc__ = f"Run only the `{name}` stage ({stage.what}); the stages it needs must be cached."
    # Deployments import flows by module path (flows/deployments.py): the function's name must be the
    # module attribute it is bound to below.
    stage_flow.__name__ = stage_flow.__qualname__ = f"{name}_flow"
    return flow(name=f"r1flow-{name}", log_prints=True)(stage_flow)


STAGE_FLOWS = {name: _stage_flow(st) for name, st in STAGES.items()}
globals().update({f"{name}_flow": fl for name, fl in STAGE_FLOWS.items()})
