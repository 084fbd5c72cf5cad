"""The DAG, declared once: every stage of the DeepSeek-R1 recipe with its recipe section, artifact kind,
the nodes it adds for a recipe (with their parents), its build function, what it shows in the Prefect
UI and what the planner counts for it.

Everything that needs to know the stages reads this module: the pipeline flow (flows/pipeline.py runs
`select(...)` in order), the per-stage flows and their deployments, `r1flow stages` and
`r1flow run --dry-run`, the planner (`plan`) and `latest_refs`. A node's declared parents are the
parents its artifact records (tasks/common.py: `run_node`), so the graph printed is the graph stored.

Which nodes a run computes: the report (or the nodes of `--until STAGE`) and everything they depend
on, nothing else. A recipe with `distill.teacher_from` therefore skips stages 1-8: its traces come from
the user's teacher, and its report evaluates that teacher and the students. Nodes of stages before
`--from` must already be in the store.

To add a stage: write its build function `build(ctx: BuildContext)` in a tasks/ module (library code
in models/ or data/), give the recipe a section for its config, and add one `Stage(...)` to STAGES
below. The README's "How a stage is declared" walks through an example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from r1flow.models import plan as planner
from r1flow.models.train.pretrain import PretrainConfig
from r1flow.data.sources import WORLD, fingerprint
from r1flow.data.store import ArtifactKind, ArtifactRef, ArtifactStore
from r1flow.tasks import data_import, evaluate, export, pretrain, report, reward_model, rl, sample, sft, tokenizer, world
from r1flow.tasks.common import Build, Node, StageMode, node_key

if TYPE_CHECKING:
    from r1flow.recipe import Recipe

Show = Callable[[ArtifactStore, Node, ArtifactRef], None]


@dataclass(frozen=True)
class Stage:
    """One stage of the DAG."""

    name: str
    what: str  # one line for `r1flow stages`, flow descriptions and deployments
    section: str  # the recipe field its config comes from ("distill.traces": a sub-section)
    kind: ArtifactKind
    build: Build  # tasks/*.py: fills the artifact; its module's import closure is the code version
    nodes: Callable[[Recipe], list[Node]]  # what it adds for a recipe, parents resolved ([]: not in it)
    show: Show | None = None  # what it shows in the UI, also when its artifact was cached
    estimate: planner.Estimator | None = None  # its planner row (models/plan.py)


# ---- how each stage's nodes come from the recipe -----------------------------------------------------
W, TOK = {"world": "world"}, {"world": "world", "tokenizer": "tokenizer"}
# The MoE line's checkpoints and their evaluation labels, in run order.
R1_PATH = {"pretrain": "base", "r1_zero": "r1_zero", "sft_cold": "sft_cold", "reasoning_rl": "reasoning_rl",
           "sft_mix": "sft_mix", "final_rl": "r1"}
RL_CURVES = ("r1_zero", "reasoning_rl", "final_rl")
# Per student: checkpoint stage -> evaluation label suffix.
STUDENT_CHECKPOINTS = {"student_pretrain": "", "distill": "_distill", "student_rl": "_rl"}


def _one(stage: str, parents: dict[str, str]) -> Callable[[Recipe], list[Node]]:
    """A stage with one node, configured by the recipe section of its own name."""
    return lambda r: [Node(stage, stage, getattr(r, stage), dict(parents))]


def _data(cfg) -> dict[str, str]:
    """Parents for the imported sources a section names in `datasets` (role and node `data:NAME`)."""
    return {f"data:{d}": f"data:{d}" for d in getattr(cfg, "datasets", []) if d != WORLD}


def _prompted(cfg) -> dict[str, str]:
    """Where an RL or sampling section's prompts come from: the world (unless its `datasets` leave it
    out; the mixture's instruction tasks need it too) and its imported sources."""
    world = cfg.uses_world() or bool(getattr(cfg, "instruction_families", None))
    return (dict(W) if world else {}) | _data(cfg)


def _policy(stage: str, policy: str) -> Callable[[Recipe], list[Node]]:
    """An RL or sampling stage of the MoE line: one node from `policy`, prompted as its section says."""
    return lambda r: [Node(stage, stage, getattr(r, stage), {"policy": policy, **_prompted(getattr(r, stage))})]


def _sft_parents(cfg, data: str) -> dict[str, str]:
    return ({"data": data} if cfg.generated else {}) | _data(cfg)


def _sft(stage: str, base: str, data: str) -> Callable[[Recipe], list[Node]]:
    """An SFT stage of the MoE line: `base` fine-tuned on `data` (generated) and/or imported sources."""
    return lambda r: [Node(stage, stage, getattr(r, stage), {"base": base, **_sft_parents(getattr(r, stage), data)})]


def _data_import(r: Recipe) -> list[Node]:
    """One node per source of `data:`. A training source's parents are the benchmarks (decontamination);
    its key covers the files' sha256 (data/sources.py: fingerprint), read now, before anything runs."""
    bench = r.benchmark_sources()
    return [Node(f"data:{name}", "data_import", src,
                 {} if name in bench else {f"benchmark:{b}": f"data:{b}" for b in bench},
                 record={"name": name, "source": src.model_dump(mode="json"), "fingerprint": fingerprint(src)},
                 label=f"data-{name}")  # benchmarks first: the training sources are checked against them
            for name, src in sorted(r.data.items(), key=lambda kv: kv[0] not in bench)]


def _r1_path_runs(r: Recipe) -> bool:
    """Stages 1-8 are needed by the report unless a teacher the user names replaces R1."""
    return not (r.distill.students and r.distill.teacher_from)


def _final_rl(r: Recipe) -> list[Node]:
    rm = {"reward_model": "reward_model"} if "helpfulness" in r.final_rl.rewards else {}
    return [Node("final_rl", "final_rl", r.final_rl, {"policy": "sft_mix", **rm, **_prompted(r.final_rl)})]


def _reward_model(r: Recipe) -> list[Node]:
    if "helpfulness" not in r.final_rl.rewards:
        return []
    return [Node("reward_model", "reward_model", r.reward_model, {"policy": "sft_mix", **W})]


def _student_pretrain(r: Recipe) -> list[Node]:
    return [Node(f"student_pretrain:{s.name}", "student_pretrain", s.pretrain, dict(TOK), record=s,
                 label=f"student_pretrain-{s.name}") for s in r.distill.students]


def _distill_teacher(r: Recipe) -> list[Node]:
    src = r.distill.teacher_from
    if not (r.distill.students and src):
        return []
    return [Node("distill_teacher", "distill_teacher", PretrainConfig(import_from=src), dict(TOK),
                 record={"import_from": src})]


def _distill_traces(r: Recipe) -> list[Node]:
    if not r.distill.students:
        return []
    teacher = "distill_teacher" if r.distill.teacher_from else "final_rl"
    return [Node("distill_traces", "distill_traces", r.distill.traces, {"policy": teacher, **_prompted(r.distill.traces)})]


def _distill(r: Recipe) -> list[Node]:
    sft_cfg = r.distill.sft.model_dump(mode="json")
    return [Node(f"distill:{s.name}", "distill", r.distill.sft,
                 {"base": f"student_pretrain:{s.name}", **_sft_parents(r.distill.sft, "distill_traces")},
                 record={"student": s.name, "sft": sft_cfg}, label=f"distill-{s.name}") for s in r.distill.students]


def _student_rl(r: Recipe) -> list[Node]:
    if not r.distill.rl_baseline:
        return []
    rl_cfg = r.distill.rl.model_dump(mode="json")
    return [Node(f"student_rl:{s.name}", "student_rl", r.distill.rl,
                 {"policy": f"student_pretrain:{s.name}", **_prompted(r.distill.rl)},
                 record={"student": s.name, "rl": rl_cfg}, label=f"student_rl-{s.name}") for s in r.distill.students]


def _line(r: Recipe) -> list[str]:
    """The MoE line's checkpoint stages this recipe trains: up to `stop_after`, none with teacher_from."""
    if not _r1_path_runs(r):
        return []
    stages = list(R1_PATH)
    return stages[:stages.index(r.stop_after) + 1] if r.stop_after else stages


def checkpoints(r: Recipe) -> dict[str, str]:
    """Evaluation label -> checkpoint node, in run order: the MoE line (up to `stop_after`; none when
    teacher_from replaces it), the user's teacher, then per student its pretrained, distilled and RL-only
    checkpoints."""
    out = {R1_PATH[st]: st for st in _line(r)}
    if _distill_teacher(r):
        out["teacher"] = "distill_teacher"
    for s in r.distill.students:
        for st, suffix in STUDENT_CHECKPOINTS.items():
            if st != "student_rl" or r.distill.rl_baseline:
                out[s.name + suffix] = f"{st}:{s.name}"
    return out


def _evaluate(r: Recipe) -> list[Node]:
    ev = r.evaluate.model_dump(mode="json")
    parents = (dict(W) if r.evaluate.world else {}) | {f"data:{b}": f"data:{b}" for b in r.benchmark_sources()}
    return [Node(f"evaluate:{label}", "evaluate", r.evaluate, {"checkpoint": ckpt, **parents},
                 record={"eval": ev, "label": label}, label=label) for label, ckpt in checkpoints(r).items()]


def exported(r: Recipe) -> list[str]:
    """Evaluation labels of the checkpoints the `export` stage ships: `export.checkpoints`, or by default R1
    (when the run trains it), the imported teacher and every distilled student."""
    labels = checkpoints(r)
    if r.export.checkpoints is not None:
        if unknown := [lb for lb in r.export.checkpoints if lb not in labels]:
            raise ValueError(f"export.checkpoints: {unknown} are not checkpoints of this recipe (its checkpoints: "
                             f"{', '.join(labels)})")
        return list(r.export.checkpoints)
    return [lb for lb in labels if lb in ("r1", "teacher") or lb.endswith("_distill")]


def _export(r: Recipe) -> list[Node]:
    labels = checkpoints(r)
    if r.evaluate.world:
        prompts, template = dict(W), "r1_zero"
    else:
        first = r.evaluate.benchmarks[0]
        prompts, template = {f"data:{first.data}": f"data:{first.data}"}, first.template
    cfg = r.export.model_dump(mode="json")
    return [Node(f"export:{lb}", "export", r.export, {"checkpoint": labels[lb], "evaluate": f"evaluate:{lb}", **prompts},
                 record={"export": cfg, "label": lb, "name": f"{r.name}-{lb}", "template": template}, label=lb)
            for lb in exported(r)]


def _report(r: Recipe) -> list[Node]:
    labels = list(checkpoints(r))
    curves = {st: st for st in RL_CURVES if st in _line(r)}
    if r.distill.rl_baseline:
        curves |= {f"{s.name}_rl": f"student_rl:{s.name}" for s in r.distill.students}
    exports = exported(r)
    parents = ({f"evaluate:{lb}": f"evaluate:{lb}" for lb in labels} | {f"curves:{lb}": k for lb, k in curves.items()}
               | {f"export:{lb}": f"export:{lb}" for lb in exports})
    config = {"name": r.name, "checkpoints": labels, "curves": list(curves),
              "students": [s.name for s in r.distill.students], "benchmarks": r.benchmark_sources(),
              "exports": exports}
    return [Node("report", "report", config, parents)]


# ---- the registry, in execution order ------------------------------------------------------------------
STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("world", "generate task world, pretraining corpus and held-out prompt sets", "world", "dataset",
          world.build_world, _one("world", {}), show=world.show_world),
    Stage("data_import", "import one of your data sources (`data:`): load, map, check, decontaminate, data card",
          "data", "dataset", data_import.build_import, _data_import, show=data_import.show_import),
    Stage("tokenizer", "train the BPE tokenizer with chat template and <think>/<answer> tokens", "tokenizer",
          "tokenizer", tokenizer.build_tokenizer, _one("tokenizer", W)),
    Stage("pretrain", "pretrain the DeepSeek-V3-style MoE base model (or import your own)", "pretrain",
          "checkpoint", pretrain.build_pretrain, _one("pretrain", TOK), estimate=planner.estimate_pretrain),
    Stage("r1_zero", "GRPO from the base with rule rewards (accuracy + format), vLLM rollouts", "r1_zero",
          "checkpoint", rl.build_rl, _policy("r1_zero", "pretrain"),
          estimate=planner.estimate_rl("r1_zero")),
    Stage("cold_start", "sample long CoT from R1-Zero, keep correct and readable ones, rewrite, data card",
          "cold_start", "dataset", sample.build_cold_start, _policy("cold_start", "r1_zero"),
          estimate=planner.estimate_sampling("cold_start")),
    Stage("sft_cold", "SFT of the base model on the cold-start data", "sft_cold", "checkpoint", sft.build_sft,
          _sft("sft_cold", "pretrain", "cold_start"),
          estimate=planner.estimate_sft("sft_cold", "cold_start")),
    Stage("reasoning_rl", "GRPO from sft_cold: accuracy + format + language consistency", "reasoning_rl",
          "checkpoint", rl.build_rl, _policy("reasoning_rl", "sft_cold"),
          estimate=planner.estimate_rl("reasoning_rl")),
    Stage("rejection_sampling", "sample reasoning_rl, keep correct and readable; add non-reasoning data: the SFT "
          "mixture", "rejection_sampling", "dataset", sample.build_rejection,
          _policy("rejection_sampling", "reasoning_rl"),
          estimate=planner.estimate_sampling("rejection_sampling")),
    Stage("sft_mix", "SFT of the base model on the mixture", "sft_mix", "checkpoint", sft.build_sft,
          _sft("sft_mix", "pretrain", "rejection_sampling"),
          estimate=planner.estimate_sft("sft_mix", "rejection_sampling")),
    Stage("reward_model", "helpfulness reward model (TRL RewardTrainer) on checkable preference pairs",
          "reward_model", "checkpoint", reward_model.build_reward_model, _reward_model,
          estimate=planner.estimate_reward_model),
    Stage("final_rl", "GRPO from sft_mix over all prompts: rule rewards + the reward model; the R1 checkpoint",
          "final_rl", "checkpoint", rl.build_rl, _final_rl, estimate=planner.estimate_rl("final_rl")),
    Stage("student_pretrain", "pretrain each dense student (Llama/Qwen2-style) on the same corpus, or import it",
          "distill.students", "checkpoint", pretrain.build_pretrain, _student_pretrain,
          estimate=planner.estimate_student_pretrain),
    Stage("distill_teacher", "import the teacher `distill.teacher_from` names (instead of the run's R1)",
          "distill.teacher_from", "checkpoint", pretrain.build_pretrain, _distill_teacher),
    Stage("distill_traces", "the teacher (R1 or distill_teacher) answers the distillation prompts with vLLM; "
          "verified, readable traces plus instruction answers", "distill.traces", "dataset", sample.build_rejection,
          _distill_traces, estimate=planner.estimate_distill_traces),
    Stage("distill", "SFT of each pretrained student on the teacher's traces, no RL", "distill.sft", "checkpoint",
          sft.build_sft, _distill, estimate=planner.estimate_distill),
    Stage("student_rl", "the baseline: GRPO from each pretrained student with the R1-Zero rewards", "distill.rl",
          "checkpoint", rl.build_rl, _student_rl, estimate=planner.estimate_student_rl),
    Stage("evaluate", "pass@1 / cons@k on held-out problems, one node per checkpoint", "evaluate", "report",
          evaluate.build_eval, _evaluate, show=evaluate.show_eval, estimate=planner.estimate_evaluate),
    Stage("export", "ship checkpoints as GGUF (checked by llama.cpp) with Ollama Modelfiles, and as Hugging Face "
          "folders", "export", "export", export.build_export, _export, show=export.show_export),
    Stage("report", "one table over every checkpoint, the paper's four claims, plots: report.md", "evaluate",
          "report", report.build_report, _report, show=report.show_report),
]}
# The stage names as a type: Prefect turns it into the UI form's drop-down, typer and pydantic check it.
StageName = Literal[tuple(STAGES)]  # type: ignore[valid-type]
# Stages 1-8, the MoE line: what distill.teacher_from makes unnecessary.
R1_LINE = list(STAGES)[list(STAGES).index("pretrain"):list(STAGES).index("final_rl") + 1]


def dag(recipe: Recipe) -> list[Node]:
    """Every node the recipe declares, in execution order (stage order, then the stage's own order)."""
    nodes = [n for st in STAGES.values() for n in st.nodes(recipe)]
    keys = {n.key for n in nodes}
    for n in nodes:
        if missing := [k for k in n.parents.values() if k not in keys]:
            raise ValueError(f"stage {n.stage!r} node {n.key!r}: parents {missing} are not in this recipe's DAG")
    return nodes


def ancestors(nodes: list[Node], keys: set[str]) -> set[str]:
    """`keys` and every node they depend on."""
    by_key = {n.key: n for n in nodes}
    seen, todo = set(), list(keys)
    while todo:
        k = todo.pop()
        if k not in seen:
            seen.add(k)
            todo += by_key[k].parents.values()
    return seen


@dataclass(frozen=True)
class Step:
    """A node's part in one run: a mode, or None when the run skips it, and why."""

    node: Node
    mode: StageMode | None
    why: str


def select(recipe: Recipe, from_stage: str | None = None, until_stage: str | None = None,
           force: tuple[str, ...] | list[str] = ()) -> list[Step]:
    """Which nodes a run computes, reuses or skips (see the module docstring), in execution order."""
    order = list(STAGES)
    for flag, name in (("--from", from_stage), ("--until", until_stage), *(("--force", f) for f in force)):
        if name is not None and name not in STAGES:
            raise ValueError(f"{flag}: unknown stage {name!r}; stages: {', '.join(order)}")
    if from_stage and until_stage and order.index(from_stage) > order.index(until_stage):
        raise ValueError(f"--from {from_stage} comes after --until {until_stage}")
    nodes = dag(recipe)
    if until_stage:
        targets = {n.key for n in nodes if n.stage == until_stage}
        if not targets:
            raise ValueError(f"--until {until_stage}: this recipe has no {until_stage} stage (its section, "
                             f"{STAGES[until_stage].section}, leaves it out)")
        wanted = f"--until {until_stage}"
    else:
        targets, wanted = {n.key for n in nodes if n.stage == "report"}, "the report"
    needed = ancestors(nodes, targets)
    steps = []
    for n in nodes:
        if n.key not in needed:
            if until_stage and order.index(n.stage) > order.index(until_stage):
                why = f"after --until {until_stage}"
            elif n.stage in R1_LINE and not _r1_path_runs(recipe):
                why = f"not needed by {wanted}: distill.teacher_from replaces the run's R1"
            else:
                why = f"not needed by {wanted}"
            steps.append(Step(n, None, why))
        elif from_stage and order.index(n.stage) < order.index(from_stage):
            steps.append(Step(n, "cached", f"before --from {from_stage}: must be in the store"))
        elif n.stage in force:
            steps.append(Step(n, "force", "--force"))
        else:
            steps.append(Step(n, "run", f"needed by {wanted}"))
    return steps



def dry_run(recipe: Recipe, store: ArtifactStore, steps: list[Step]) -> list[dict]:
    """What a run would do per node, without doing it: reuse (its cache key has an artifact), compute,
    missing (before --from and not in the store: the run would stop there) or skip, and why."""
    refs: dict[str, ArtifactRef] = {}
    missing: set[str] = set()
    out = []
    for s in steps:
        n = s.node
        if s.mode is None:
            out.append({"node": n.key, "action": "skip", "why": s.why})
            continue
        pending = [k for k in n.parents.values() if k not in refs]
        if pending:
            action, why = "compute", f"parent {pending[0]} will be computed"
            if lost := [k for k in pending if k in missing]:
                why = f"parent {lost[0]} is missing: the run stops before this"
            if s.mode == "cached":
                action, why = "missing", f"{s.why}; parent {pending[0]} is not there"
        else:
            key, _ = node_key(n, STAGES[n.stage].build, refs)
            ref = store.lookup(key)
            if s.mode == "force":
                action, why = "compute", "--force"
            elif ref is not None:
                action, why = "reuse", f"artifact {ref.id[:12]} has cache key {key[:12]}"
                refs[n.key] = ref
            elif s.mode == "cached":
                action, why = "missing", f"{s.why}; no artifact has cache key {key[:12]}"
            else:
                action, why = "compute", f"no artifact has cache key {key[:12]} (new config, parents or code)"
        if action == "missing":
            missing.add(n.key)
        out.append({"node": n.key, "action": action, "why": why})
    return out


def graph(recipe: Recipe) -> dict[str, list[str]]:
    """Stage -> its parent stages, as this recipe resolves them (the union over the stage's nodes)."""
    nodes = dag(recipe)
    stage_of = {n.key: n.stage for n in nodes}
    out: dict[str, list[str]] = {}
    for n in nodes:
        parents = out.setdefault(n.stage, [])
        for k in n.parents.values():
            if stage_of[k] not in parents:
                parents.append(stage_of[k])
    return out


def plan(recipe: Recipe, steps: list[Step] | None = None, peak: float | None = None) -> dict:
    """The planner's rows (models/plan.py) for the stages a run needs, in DAG order."""
    steps = steps if steps is not None else select(recipe)
    run = [s.node for s in steps if s.mode is not None]
    stages = [st for st in STAGES.values() if st.estimate and any(n.stage == st.name for n in run)]
    return planner.plan_recipe(recipe, [st.estimate for st in stages],
                               evaluated_checkpoints=sum(n.stage == "evaluate" for n in run), peak=peak)


def latest_refs(store: ArtifactStore, recipe: Recipe) -> dict[str, ArtifactRef]:
    """The newest artifact of each node of `recipe` whose manifest records the node's config (for
    `r1flow plan` after a run: code versions and parents are not compared)."""
    from pydantic import BaseModel

    want = {}
    for n in dag(recipe):
        rec = n.recorded.model_dump(mode="json") if isinstance(n.recorded, BaseModel) else n.recorded
        want[(n.stage, _canon(rec))] = n.key
    refs: dict[str, ArtifactRef] = {}
    for m in store.list():  # oldest first: later ones win
        if (key := want.get((m.stage, _canon(m.config)))) is not None:
            refs[key] = store.ref(m.id)
    return refs


def _canon(obj) -> str:
    import json

    return json.dumps(obj, sort_keys=True, default=str)
