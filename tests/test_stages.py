"""The stage registry: computed code versions, which nodes a run needs, the declared graph.
    pytest tests/test_stages.py"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from r1flow import code_version as cv
from r1flow.recipe import load_recipe
from r1flow.stages import R1_LINE, STAGES, StageName, checkpoints, dag, graph, select
from conftest import with_teacher

SOURCES = ("r1flow", "tasks", "models", "data", "flows")


@pytest.fixture
def project_copy(tmp_path):
    """The project's source folders copied as they are (the code_version rebase maps into it)."""
    for d in SOURCES:
        shutil.copytree(cv._ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path}: {old!r} not found"
    path.write_text(text.replace(old, new, 1))


def test_an_edit_deep_in_a_stages_import_closure_changes_its_key(project_copy):
    # cold_start/rejection_sampling (tasks/sample.py) build every prompt with models/eval/evaluate.py:
    # build_prompt, two imports away (tasks/sample -> models/eval/collect -> models/eval/evaluate, inside
    # a function). The hand-kept list this replaced left that module out.
    entries = {st.build.__module__ for st in STAGES.values()}
    before = {e: cv.code_version(e, project_copy) for e in entries}
    assert before == {e: cv.code_version(e) for e in entries}  # the copy hashes like the installed tree
    files, _ = cv.closure("r1flow.tasks.sample")
    assert "r1flow.models.eval.evaluate" in files and "r1flow.models.train.grpo" not in files
    _edit(project_copy / "models/eval/evaluate.py", "def build_prompt(", "def build_prompt(  # edited\n")
    after = {e: cv.code_version(e, project_copy) for e in entries}
    changed = {e for e in entries if after[e] != before[e]}
    # Every stage that can run build_prompt is re-keyed (sampling, the reward model's sampling,
    # evaluation, the export's check prompts, the report's tables); the others are not.
    assert changed == {"r1flow.tasks.sample", "r1flow.tasks.reward_model", "r1flow.tasks.evaluate",
                       "r1flow.tasks.export", "r1flow.tasks.report"}
    # A module outside every build closure (the planner) re-keys nothing.
    _edit(project_copy / "models/plan.py", "def plan_recipe(", "def plan_recipe(  # edited\n")
    assert {e: cv.code_version(e, project_copy) for e in entries} == after


def test_library_versions_enter_the_key_only_where_imported(monkeypatch):
    _, ext = cv.closure("r1flow.tasks.world")
    assert "vllm" not in ext and "torch" not in ext  # the world is generated without them
    _, ext = cv.closure("r1flow.tasks.rl")
    assert {"torch", "transformers", "trl", "vllm"} <= ext
    world, rl = cv.code_version("r1flow.tasks.world"), cv.code_version("r1flow.tasks.rl")
    real = cv.importlib.metadata.version
    monkeypatch.setattr(cv.importlib.metadata, "version",
                        lambda d: "999.0" if d.startswith("vllm") else real(d))
    assert cv.code_version("r1flow.tasks.rl") != rl
    assert cv.code_version("r1flow.tasks.world") == world


def test_no_hand_kept_module_list_remains():
    from r1flow.tasks import common

    assert "modules" not in common.run_node.__code__.co_varnames
    for path in (cv._ROOT / "tasks").glob("*.py"):
        assert "modules=" not in path.read_text() and "_MODULES" not in path.read_text(), path


def test_stage_names_are_the_registry():
    assert list(StageName.__args__) == list(STAGES)


def test_the_graph_is_resolved_from_the_recipe():
    recipe = load_recipe("configs/smoke.yaml")
    g = graph(recipe)
    assert g["final_rl"] == ["sft_mix", "reward_model", "world"]
    assert g["distill_traces"] == ["final_rl", "world"]
    assert set(g["report"]) == {"evaluate", "r1_zero", "reasoning_rl", "final_rl", "student_rl", "export"}
    assert g["export"] == ["pretrain", "evaluate", "world", "distill"]  # only the exported checkpoints
    mine = recipe.model_copy(update={"distill": recipe.distill.model_copy(update={"teacher_from": "/x"})})
    # smoke.yaml exports base by name; with a teacher from elsewhere the run has no base
    with pytest.raises(ValueError, match=r"export.checkpoints: \['base'\] are not checkpoints of this recipe"):
        graph(mine)
    mine = with_teacher(recipe, "/x")
    assert graph(mine)["distill_traces"] == ["distill_teacher", "world"]
    assert [n.label for n in dag(mine) if n.stage == "export"] == ["teacher", "qwen2_s_distill"]
    no_rm = recipe.model_copy(update={"final_rl": recipe.final_rl.model_copy(
        update={"rewards": {"accuracy": 1.0, "format": 1.0}})})
    assert "reward_model" not in graph(no_rm) and graph(no_rm)["final_rl"] == ["sft_mix", "world"]


def _modes(steps) -> dict[str, str | None]:
    return {s.node.key: s.mode for s in steps}


def test_until_computes_only_the_ancestors():
    recipe = load_recipe("configs/smoke.yaml")
    got = _modes(select(recipe, until_stage="distill_traces"))
    run = {k for k, m in got.items() if m}
    # The student is not an ancestor of the traces, although it comes before them in the order.
    assert run == {"world", "tokenizer", "pretrain", "r1_zero", "cold_start", "sft_cold", "reasoning_rl",
                   "rejection_sampling", "sft_mix", "reward_model", "final_rl", "distill_traces"}
    assert {k for k, m in _modes(select(recipe, until_stage="student_pretrain")).items() if m} == \
        {"world", "tokenizer", "student_pretrain:qwen2_s"}
    steps = select(recipe, from_stage="sft_cold", until_stage="sft_cold")
    assert {k: m for k, m in _modes(steps).items() if m} == {
        "world": "cached", "tokenizer": "cached", "pretrain": "cached", "r1_zero": "cached",
        "cold_start": "cached", "sft_cold": "run"}
    why = {s.node.key: s.why for s in steps}
    assert why["reasoning_rl"] == "after --until sft_cold" and why["student_pretrain:qwen2_s"] == \
        "after --until sft_cold"


def test_teacher_from_skips_stages_1_to_8():
    recipe = load_recipe("configs/smoke.yaml")
    mine = with_teacher(recipe, "org/teacher")
    steps = select(mine)
    run = {s.node.key for s in steps if s.mode}
    assert not run & set(R1_LINE) and "distill_teacher" in run and "report" in run
    assert set(checkpoints(mine)) == {"teacher", "qwen2_s", "qwen2_s_distill", "qwen2_s_rl"}
    why = {s.node.key: s.why for s in steps}
    assert why["final_rl"] == "not needed by the report: distill.teacher_from replaces the run's R1"
    # Something else that needs them still gets them.
    assert _modes(select(mine, until_stage="final_rl"))["final_rl"] == "run"


def test_bad_run_options_name_the_flag():
    recipe = load_recipe("configs/smoke.yaml")
    with pytest.raises(ValueError, match="--until: unknown stage 'nope'"):
        select(recipe, until_stage="nope")
    with pytest.raises(ValueError, match="--from report comes after --until world"):
        select(recipe, from_stage="report", until_stage="world")
    with pytest.raises(ValueError, match="--until distill_teacher: this recipe has no distill_teacher stage"):
        select(recipe, until_stage="distill_teacher")


def test_every_node_key_is_unique_and_parents_come_first():
    for path in ("configs/smoke.yaml", "configs/tiny.yaml", "configs/deepseek_r1.yaml"):
        nodes = dag(load_recipe(path))
        seen: set[str] = set()
        for n in nodes:
            assert n.key not in seen and set(n.parents.values()) <= seen, (path, n.key)
            seen.add(n.key)


def build_corpus_stats(b) -> None:
    """The README's example stage: documents and mean length per document kind of the world's corpus."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from r1flow.data.schemas import read_rows

    rows = read_rows(b.parents["world"].file("corpus.parquet"), "corpus", ["text", "doc_kind"])
    kinds = sorted({r["doc_kind"] for r in rows})
    stats = [{"doc_kind": k, "docs": sum(r["doc_kind"] == k for r in rows),
              "mean_chars": sum(len(r["text"]) for r in rows if r["doc_kind"] == k)
              / sum(r["doc_kind"] == k for r in rows)} for k in kinds]
    pq.write_table(pa.Table.from_pylist(stats), b.out / "stats.parquet")
    b.summary |= {"doc_kinds": len(stats)}


def test_adding_a_stage_is_one_declaration(prefect_harness, tmp_path, monkeypatch):
    """One `Stage(...)` and its build function: the DAG runs it (and only what it needs), records its
    parents, keys it by its own module's import closure, and lists it in the graph."""
    import pyarrow.parquet as pq

    from r1flow.data.store import ArtifactStore
    from r1flow.flows.pipeline import run_dag
    from r1flow.stages import Stage
    from r1flow.tasks.common import Node

    monkeypatch.setitem(STAGES, "corpus_stats", Stage(
        "corpus_stats", "documents and mean length per document kind", "world", "dataset", build_corpus_stats,
        lambda r: [Node("corpus_stats", "corpus_stats", r.world, {"world": "world"})]))
    recipe = load_recipe("configs/smoke.yaml", {"store": str(tmp_path)})
    refs = run_dag(recipe, until_stage="corpus_stats")
    assert set(refs) == {"world", "corpus_stats"}
    store = ArtifactStore(tmp_path)
    m = store.manifest(refs["corpus_stats"].id)
    assert m.stage == "corpus_stats" and m.parents == [refs["world"].id]
    assert m.code_version == cv.code_version(build_corpus_stats.__module__)
    stats = pq.read_table(f"{refs['corpus_stats'].path}/stats.parquet").to_pylist()
    assert sum(r["docs"] for r in stats) == store.manifest(refs["world"].id).summary["corpus_docs"]
    assert graph(recipe)["corpus_stats"] == ["world"]
    assert run_dag(recipe, until_stage="corpus_stats") == refs  # cached by its key


def test_every_stage_names_a_recipe_section_that_exists():
    from r1flow.recipe import Recipe

    recipe = Recipe()
    for st in STAGES.values():
        node = recipe
        for part in st.section.split("."):
            assert part in type(node).model_fields, (st.name, st.section)
            node = getattr(node, part)


def test_cli_stages_prints_the_graph_the_recipe_resolves():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "r1flow.cli", "stages", "--recipe", "configs/smoke.yaml"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = {line.split()[1]: line for line in out.stdout.splitlines()[1:] if line[:2].strip().isdigit()}
    assert list(lines) == list(STAGES)
    assert lines["final_rl"].endswith("<- sft_mix, reward_model, world")
    assert lines["report"].endswith("<- evaluate, r1_zero, reasoning_rl, final_rl, student_rl, export")
    assert lines["distill_teacher"].endswith("(not in this recipe)")
