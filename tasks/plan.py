"""The planner's estimate next to what the run measured: a Prefect table artifact and CLI text.

The estimate comes from models/plan.py with the recipe's `plan` section; the measured wall time of
each stage is the `seconds` its manifest recorded when it was computed (a cached stage keeps the
time of the run that built it). This module does not estimate anything itself.
"""

from __future__ import annotations

from pydantic import BaseModel

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


def _key(store: ArtifactStore, m, recipe) -> str | None:
    """The run key (as in flows/pipeline.py) of an artifact made with this recipe, else None."""
    dump = lambda cfg: cfg.model_dump(mode="json")  # noqa: E731
    students = {s.name: s for s in recipe.distill.students}
    if m.stage == "evaluate":
        return f"evaluate:{m.config.get('label')}" if m.config.get("eval") == dump(recipe.evaluate) else None
    if m.stage == "student_pretrain":
        s = students.get(m.config.get("name"))
        return f"student_pretrain:{s.name}" if s is not None and m.config == dump(s) else None
    if m.stage == "distill_traces":
        return m.stage if m.config == dump(recipe.distill.traces) else None
    if m.stage == "distill":
        ok = m.config.get("student") in students and m.config.get("sft") == dump(recipe.distill.sft)
        return f"distill:{m.config['student']}" if ok else None
    if m.stage == "student_rl":  # its config is the shared RL section; the student is its first parent
        if m.config != dump(recipe.distill.rl) or not m.parents:
            return None
        name = store.manifest(m.parents[0]).config.get("name")
        return f"student_rl:{name}" if name in students else None
    sec = getattr(recipe, m.stage, None)
    return m.stage if isinstance(sec, BaseModel) and m.config == dump(sec) else None


def latest_refs(store: ArtifactStore, recipe) -> dict[str, ArtifactRef]:
    """The newest artifact of each stage (per student, per evaluated checkpoint) whose manifest config
    equals the recipe's section (for `r1flow plan` after a run)."""
    refs: dict[str, ArtifactRef] = {}
    for m in store.list():  # oldest first: later ones win
        if (key := _key(store, m, recipe)) is not None:
            refs[key] = store.ref(m.id)
    return refs


def plan_markdown(recipe, refs: dict[str, ArtifactRef] | None = None, store: ArtifactStore | None = None) -> str:
    measured = measured_seconds(store, refs) if refs and store else None
    return format_plan(recipe.name, plan_recipe(recipe), recipe.plan, measured)


def publish_plan(recipe, root: str, refs: dict[str, ArtifactRef]) -> str:
    text = plan_markdown(recipe, refs, ArtifactStore(root))
    publish_markdown("r1flow-plan", text, "Planner estimate vs measured wall time per stage")
    return text
