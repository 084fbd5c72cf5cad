"""The Prefect pipeline on the smoke recipe: artifacts, lineage (declared = recorded), caching,
--from/--until, distill.teacher_from, --dry-run.
    pytest tests/test_pipeline.py"""

from __future__ import annotations

from pathlib import Path

import json
import subprocess
import sys

import datasets
import pyarrow.parquet as pq
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1flow.data.lineage import mermaid, tree
from r1flow.data.schemas import read_rows
from r1flow.data.store import ArtifactStore
from r1flow.flows.pipeline import STAGE_FLOWS, pipeline
from r1flow.stages import R1_LINE, STAGES, select
from r1flow.tasks.common import StageNotCached
from conftest import with_teacher

pytestmark = pytest.mark.slow


def test_pipeline_produces_verified_artifacts_with_lineage(smoke_run):
    recipe, store_root, paths = smoke_run
    assert set(paths) == {"world", "tokenizer", "pretrain", "r1_zero", "cold_start", "sft_cold", "reasoning_rl",
                          "rejection_sampling", "sft_mix", "reward_model", "final_rl", "student_pretrain:qwen2_s",
                          "distill_traces", "distill:qwen2_s", "student_rl:qwen2_s", "evaluate:base",
                          "evaluate:r1_zero", "evaluate:sft_cold", "evaluate:reasoning_rl", "evaluate:sft_mix",
                          "evaluate:r1", "evaluate:qwen2_s", "evaluate:qwen2_s_distill", "evaluate:qwen2_s_rl",
                          "export:base", "export:qwen2_s_distill", "report"}
    store = ArtifactStore(store_root)
    ids = {k: p.rsplit("/", 1)[-1] for k, p in paths.items()}
    for art_id in ids.values():
        store.verify(art_id)
    ev = store.manifest(ids["evaluate:base"])
    assert set(ev.parents) == {ids["pretrain"], ids["world"]}
    assert store.manifest(ids["pretrain"]).parents == [ids["world"], ids["tokenizer"]]
    assert [m.stage for m in store.ancestry(ids["evaluate:base"])] == ["world", "tokenizer", "pretrain", "evaluate"]
    assert store.manifest(ids["r1_zero"]).parents == [ids["pretrain"], ids["world"]]
    assert set(store.manifest(ids["evaluate:r1_zero"]).parents) == {ids["r1_zero"], ids["world"]}
    # The R1 path: each stage's parents, in the order the DAG declares them.
    for stage, parents in {"cold_start": ["r1_zero", "world"], "sft_cold": ["pretrain", "cold_start"],
                           "reasoning_rl": ["sft_cold", "world"], "rejection_sampling": ["reasoning_rl", "world"],
                           "sft_mix": ["pretrain", "rejection_sampling"], "reward_model": ["sft_mix", "world"],
                           "final_rl": ["sft_mix", "reward_model", "world"]}.items():
        assert store.manifest(ids[stage]).parents == [ids[p] for p in parents], stage
    assert set(store.manifest(ids["evaluate:r1"]).parents) == {ids["final_rl"], ids["world"]}
    # Stage 9: the student, R1's traces, the distilled student and the RL-only baseline.
    for key, parents in {"student_pretrain:qwen2_s": ["world", "tokenizer"], "distill_traces": ["final_rl", "world"],
                         "distill:qwen2_s": ["student_pretrain:qwen2_s", "distill_traces"],
                         "student_rl:qwen2_s": ["student_pretrain:qwen2_s", "world"],
                         "evaluate:qwen2_s_distill": ["distill:qwen2_s", "world"]}.items():
        assert store.manifest(ids[key]).parents == [ids[p] for p in parents], key
    for key in ("student_pretrain:qwen2_s", "distill:qwen2_s", "student_rl:qwen2_s"):
        model = AutoModelForCausalLM.from_pretrained(paths[key])  # vLLM served each one in `evaluate`
        assert model.config.model_type == "qwen2" and not hasattr(model.config, "n_routed_experts")
        assert len(AutoTokenizer.from_pretrained(paths[key])) == model.config.vocab_size
    traces = read_rows(f"{paths['distill_traces']}/samples.parquet", "sft_samples")
    assert traces and {r["source"] for r in traces} == {"final_rl"} | ({"world"} & {r["source"] for r in traces})
    # The report: every evaluated checkpoint, four claims with a verdict, plots and per-sample rows.
    rep = Path(paths["report"])
    assert set(store.manifest(ids["report"]).parents) >= {ids[k] for k in ids if k.startswith("evaluate:")}
    claims = json.loads((rep / "claims.json").read_text())
    assert [c["claim"] for c in claims] == [1, 2, 3, 4]
    assert all(c["verdict"] in ("holds", "does not hold", "not measured") and c["evidence"] for c in claims)
    assert "compute: distill" in claims[3]["evidence"]  # each side's training time, read from the lineage
    md = (rep / "report.md").read_text()
    assert "![accuracy](accuracy.png)" in md and "qwen2_s_distill" in md and "qwen2_s_rl" in md
    assert (rep / "accuracy.png").stat().st_size > 1000 and (rep / "rl_curves.png").stat().st_size > 1000
    table = pq.read_table(rep / "table.parquet").to_pylist()
    assert {r["checkpoint"] for r in table} == {k.split(":", 1)[1] for k in ids if k.startswith("evaluate:")}
    samples = read_rows(rep / "samples.parquet", "eval_samples")
    assert len(samples) == sum(len(read_rows(f"{paths[k]}/samples.parquet", "eval_samples"))
                               for k in ids if k.startswith("evaluate:"))
    for stage in ("cold_start", "rejection_sampling"):
        assert (store_root / "objects" / ids[stage] / "card.md").read_text().startswith("# Data card")
        rows = read_rows(f"{paths[stage]}/samples.parquet", "sft_samples")
        assert rows and all(r["response"] for r in rows)
    mix = read_rows(f"{paths['rejection_sampling']}/samples.parquet", "sft_samples")
    assert {r["kind"] for r in mix} == {"reasoning", "instruction"}
    pairs = read_rows(f"{paths['reward_model']}/r1flow/pairs.parquet", "preference_pairs")
    assert {r["split"] for r in pairs} == {"train", "heldout"}
    for stage in ("sft_cold", "reasoning_rl", "sft_mix", "final_rl"):
        AutoModelForCausalLM.from_pretrained(paths[stage])
    AutoModelForCausalLM.from_pretrained(paths["r1_zero"])
    assert "pretrain" in tree(store, ids["evaluate:base"]) and "-->" in mermaid(store.ancestry(ids["evaluate:base"]))
    # Payloads load with the tools users have.
    ds = datasets.load_dataset("parquet", data_files=str(store_root / "objects" / ids["world"] / "eval.parquet"))
    assert ds["train"].num_rows > 0
    AutoModelForCausalLM.from_pretrained(paths["pretrain"])
    rows = read_rows(f"{paths['evaluate:base']}/summary.parquet", "eval_summary")
    assert {r["family"] for r in rows} == {"add", "copy", "reasoning (all)"} and all(0 <= r["pass@1"] <= 1 for r in rows)
    assert (store_root / "objects" / ids["evaluate:base"] / "report.md").exists()


def test_every_artifact_records_the_parents_its_stage_declares(smoke_run):
    """r1flow/stages.py's declared parents (resolved from the recipe) are what each manifest records,
    in order, for every node of the run: the graph `r1flow stages` prints is the stored one."""
    recipe, store_root, paths = smoke_run
    store = ArtifactStore(store_root)
    ids = {k: p.rsplit("/", 1)[-1] for k, p in paths.items()}
    steps = [s for s in select(recipe) if s.mode]
    assert {s.node.key for s in steps} == set(paths)
    for s in steps:
        m = store.manifest(ids[s.node.key])
        assert m.stage == s.node.stage and m.parents == [ids[k] for k in s.node.parents.values()], s.node.key
    # The report's parents include the RL checkpoints, for the curves, besides every evaluation.
    assert {ids[k] for k in ("r1_zero", "reasoning_rl", "final_rl", "student_rl:qwen2_s")} <= \
        set(store.manifest(ids["report"]).parents)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "r1flow.cli", "run", "-r", "configs/smoke.yaml", *args],
                          capture_output=True, text=True, timeout=300)


def test_dry_run_says_what_would_run_and_why(smoke_run, tmp_path):
    _, store_root, paths = smoke_run
    out = _cli("--store", str(store_root), "--dry-run")
    assert out.returncode == 0, out.stderr
    rows = [line.split(None, 2) for line in out.stdout.splitlines()[: len(paths)]]
    assert {r[1] for r in rows} == set(paths) and {r[0] for r in rows} == {"reuse"}
    assert f"{len(paths)} reuse, 0 compute, 0 missing, 0 skip" in out.stdout
    out = _cli("--store", str(store_root), "--dry-run", "--force", "sft_mix", "--until", "final_rl")
    got = {r[1]: (r[0], r[2]) for r in (line.split(None, 2) for line in out.stdout.splitlines()) if len(r) == 3}
    assert got["sft_cold"][0] == "reuse" and got["sft_mix"] == ("compute", "--force")
    assert got["reward_model"] == ("compute", "parent sft_mix will be computed")
    assert got["student_pretrain:qwen2_s"] == ("skip", "after --until final_rl")
    empty = _cli("--store", str(tmp_path / "empty"), "--dry-run", "--from", "pretrain", "--until", "pretrain")
    assert empty.returncode == 1 and "missing  world" in empty.stdout and "before --from pretrain" in empty.stdout
    assert "error: stages before --from are missing" in empty.stderr
    assert "compute  pretrain" in empty.stdout and "parent world is missing" in empty.stdout


def test_teacher_from_runs_no_stage_of_the_r1_line(smoke_run):
    """With distill.teacher_from, distillation needs the world, the tokenizer, the student and the
    user's teacher: stages 1-8 are neither run nor looked up."""
    recipe, _, paths = smoke_run
    mine = with_teacher(recipe, paths["student_rl:qwen2_s"])
    got = pipeline(recipe=mine, until_stage="distill")
    assert set(got) == {"world", "tokenizer", "student_pretrain:qwen2_s", "distill_teacher", "distill_traces",
                        "distill:qwen2_s"}
    assert not set(got) & set(R1_LINE)
    assert got["student_pretrain:qwen2_s"] == paths["student_pretrain:qwen2_s"]


def test_base_checkpoint_logprobs_agree_in_transformers_and_vllm(smoke_run):
    import torch

    from r1flow.models.rollout.engine import EngineConfig, VLLMEngine

    _, _, paths = smoke_run
    model = AutoModelForCausalLM.from_pretrained(paths["pretrain"], dtype=torch.float32).eval()
    engine = VLLMEngine(paths["pretrain"], EngineConfig(kv_cache_gib=0.25, max_model_len=256))
    try:
        tok = engine.tokenizer
        texts = ["Problem: What is 3 + 4?\nSolution: 3 + 4 = 7.\nAnswer: 7",
                 "User: Copy: fish lime moon\nAssistant: fish lime moon<|eos|>\nThe color of kadal is blue."]
        seqs = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        got = engine.prompt_logprobs(seqs)
    finally:
        engine.close()
    with torch.no_grad():
        for s, g in zip(seqs, got):
            ref = torch.log_softmax(model(torch.tensor([s])).logits[0], -1)[torch.arange(len(s) - 1), torch.tensor(s[1:])]
            assert (ref - torch.tensor(g)).abs().max().item() <= 1e-3


def test_rerun_recomputes_nothing(smoke_run):
    recipe, store_root, paths = smoke_run
    store = ArtifactStore(store_root)
    before = {m.id: m.created for m in store.list()}
    again = pipeline(recipe=recipe)
    assert again == paths
    assert {m.id: m.created for m in store.list()} == before


def test_from_until_and_force(smoke_run, tmp_path):
    recipe, store_root, paths = smoke_run
    store = ArtifactStore(store_root)
    n = len(store.list())
    assert pipeline(recipe=recipe, until_stage="tokenizer") == {k: paths[k] for k in ("world", "tokenizer")}
    # --from evaluate reuses the cached upstream artifacts.
    assert pipeline(recipe=recipe, from_stage="evaluate")["evaluate:base"] == paths["evaluate:base"]
    # A stage before --from with no artifact for this recipe is an error, not a silent recompute.
    other = recipe.model_copy(update={"store": str(tmp_path / "empty")})
    with pytest.raises(StageNotCached, match="stage 'world' comes before --from"):
        pipeline(recipe=other, from_stage="pretrain")
    # --force recomputes a deterministic stage: same content, same id.
    assert pipeline(recipe=recipe, until_stage="world", force=["world"])["world"] == paths["world"]
    assert len(store.list()) == n


def test_distill_from_a_teacher_the_user_names(smoke_run):
    """distill.teacher_from: the user's checkpoint (here the smoke run's RL-only student, a Qwen2
    model) writes the traces instead of R1, is recorded as their parent and is evaluated as `teacher`."""
    recipe, store_root, paths = smoke_run
    store = ArtifactStore(store_root)
    source = paths["student_rl:qwen2_s"]
    mine = with_teacher(recipe, source)
    got = pipeline(recipe=mine, from_stage="distill_teacher", until_stage="distill_traces")
    teacher = store.manifest(got["distill_teacher"].rsplit("/", 1)[-1])
    assert teacher.stage == "distill_teacher" and teacher.summary["imported_from"] == source
    traces = store.manifest(got["distill_traces"].rsplit("/", 1)[-1])
    assert traces.parents == [teacher.id, paths["world"].rsplit("/", 1)[-1]]
    assert got["distill_traces"] != paths["distill_traces"]
    rows = read_rows(f"{got['distill_traces']}/samples.parquet", "sft_samples")
    assert rows and {r["source"] for r in rows} <= {"distill_teacher", "world"}
    assert "distill_teacher" not in pipeline(recipe=recipe, from_stage="distill_traces", until_stage="distill_traces")


def test_each_stage_has_its_own_flow(smoke_run):
    recipe, _, paths = smoke_run
    assert set(STAGE_FLOWS) == set(STAGES)
    assert STAGE_FLOWS["tokenizer"](recipe=recipe)["tokenizer"] == paths["tokenizer"]


def test_stage_summaries_are_prefect_artifacts(smoke_run):
    from conftest import prefect_artifacts

    arts = prefect_artifacts("r1flow-")
    for k in ("r1flow-world-summary", "r1flow-tokenizer-summary", "r1flow-pretrain-summary",
              "r1flow-evaluate-summary", "r1flow-eval-base", "r1flow-lineage", "r1flow-pretrain-report",
              "r1flow-r1-zero-summary", "r1flow-r1-zero-curves", "r1flow-eval-r1-zero", "r1flow-report",
              "r1flow-report-table", "r1flow-student-pretrain-qwen2-s-report", "r1flow-distill-traces-data-card",
              "r1flow-plan", "r1flow-world-card", "r1flow-pretrain-card", "r1flow-r1-zero-card"):
        assert k in arts, sorted(arts)
    assert all("```mermaid" in a.data for a in arts["r1flow-lineage"])
    _, _, paths = smoke_run
    # in: the base and the world; out: files with row counts (the version of this run's r1_zero)
    card = next((a.data for a in arts["r1flow-r1-zero-card"] if Path(paths["r1_zero"]).as_uri() in a.data), "")
    assert "## In" in card and "pretrain checkpoint" in card and "world dataset" in card
    assert "r1flow/rollouts.parquet" in card and "accuracy_last_10pct" in card
    assert Path(paths["r1_zero"]).as_uri() in card


def test_stages_record_their_artifacts_as_prefect_assets(smoke_run):
    """Each stage that wrote an artifact emitted a Prefect asset materialization whose key is the
    artifact directory's URI, with its parents' artifacts as upstream assets."""
    import time
    from pathlib import Path

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    _, _, paths = smoke_run
    uri = {stage: Path(p).resolve().as_uri() for stage, p in paths.items()}
    deadline = time.monotonic() + 60
    while True:
        with get_client(sync_client=True) as client:
            # This run's assets by id: other tests' pipelines (BYOD, deployments) add their own events.
            page = client.read_events(filter=EventFilter(
                event=EventNameFilter(name=["prefect.asset.materialization.succeeded"]),
                resource=EventResourceFilter(id=[uri[s] for s in ("world", "tokenizer", "pretrain",
                                                                  "r1_zero")])), limit=50)
        got = {e.resource.id: {r.id for r in e.related if r.role == "asset"} for e in page.events}
        if uri["r1_zero"] in got or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {uri[s] for s in ("world", "tokenizer", "pretrain", "r1_zero")} <= set(got), sorted(got)
    assert got[uri["pretrain"]] == {uri["world"], uri["tokenizer"]}
    assert got[uri["r1_zero"]] == {uri["pretrain"], uri["world"]}
