"""The planner's estimate next to what the run measured: a Prefect table artifact and CLI text.

The estimate comes from models/plan.py with the recipe's `plan` section; the measured wall time of
each stage is the `seconds` its manifest recorded when it was computed (a cached stage keeps the
time of the run that built it). This module does not estimate anything itself.
"""

from __future__ import annotations

from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.models.plan import format_plan, plan_recipe
from r1flow.tasks.common import publish_markdown


def measured_seconds(store: ArtifactStore, refs: dict[str, ArtifactRef]) -> dict[str, float]:
    """Stage -> seconds recorded in its manifest; `evaluate:LABEL` entries add up under `evaluate`."""
    out: dict[str, float] = {}
    for name, ref in refs.items():
        secs = store.manifest(ref.id).summary.get("seconds")
        if secs is not None:
            stage = name.split(":")[0]
            out[stage] = out.get(stage, 0.0) + float(secs)
    return out


def latest_refs(store: ArtifactStore, recipe) -> dict[str, ArtifactRef]:
    """The newest artifact of each stage whose manifest config equals the recipe's section (for
    `r1flow plan` after a run; evaluate artifacts are keyed by the checkpoint they scored)."""
    from r1flow.flows.pipeline import STAGES

    sections = {stage: getattr(recipe, stage) for stage in STAGES if hasattr(recipe, stage)}
    refs: dict[str, ArtifactRef] = {}
    for m in store.list():  # oldest first: later ones win
        sec = sections.get(m.stage)
        if sec is None:
            continue
        evaluate = m.stage == "evaluate"
        if (m.config.get("eval") if evaluate else m.config) != sec.model_dump(mode="json"):
            continue
        key = f"evaluate:{m.config.get('label')}" if evaluate else m.stage
        refs[key] = store.ref(m.id)
    return refs


def plan_markdown(recipe, refs: dict[str, ArtifactRef] | None = None, store: ArtifactStore | None = None) -> str:
    measured = measured_seconds(store, refs) if refs and store else None
    return format_plan(recipe.name, plan_recipe(recipe), recipe.plan, measured)


def publish_plan(recipe, root: str, refs: dict[str, ArtifactRef]) -> str:
    text = plan_markdown(recipe, refs, ArtifactStore(root))
    publish_markdown("r1flow-plan", text, "Planner estimate vs measured wall time per stage")
    return text
