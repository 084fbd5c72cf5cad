"""The planner's estimate next to what the run measured: a Prefect table artifact and CLI text.

The estimate comes from models/plan.py with the recipe's `plan` section, for the stages the run needs
(r1flow/stages.py: `plan`); the measured wall time of each stage is the `seconds` its manifest recorded
when it was computed (a cached stage keeps the time of the run that built it). This module does not
estimate anything itself.
"""

from __future__ import annotations

from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.models.plan import format_plan
from r1flow.tasks.common import publish_markdown


def measured_seconds(store: ArtifactStore, refs: dict[str, ArtifactRef]) -> dict[str, float]:
    """Stage -> seconds recorded in its manifest; per-student and per-checkpoint nodes
    (`distill:NAME`, `evaluate:LABEL`) add up under their stage."""
    out: dict[str, float] = {}
    for name, ref in refs.items():
        secs = store.manifest(ref.id).summary.get("seconds")
        if secs is not None:
            stage = name.split(":")[0]
            out[stage] = out.get(stage, 0.0) + float(secs)
    return out


def plan_markdown(recipe, refs: dict[str, ArtifactRef] | None = None, store: ArtifactStore | None = None,
                  steps: list | None = None) -> str:
    """`steps` (r1flow/stages.py: `select`) chooses the stages; default: a whole run of the recipe."""
    from r1flow.stages import plan

    measured = measured_seconds(store, refs) if refs and store else None
    return format_plan(recipe.name, plan(recipe, steps), recipe.plan, measured)


def publish_plan(recipe, root: str, refs: dict[str, ArtifactRef], steps: list | None = None) -> str:
    text = plan_markdown(recipe, refs, ArtifactStore(root), steps)
    publish_markdown("r1flow-plan", text, "Planner estimate vs measured wall time per stage")
    return text
