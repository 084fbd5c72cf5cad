# pytest tests/test_byod.py -q
"""configs/byod_smoke.yaml end to end through the pipeline flow: R1-Zero on a user Parquet file
(GSM8K's schema), SFT on a user `messages` file mixed with the cold-start data, evaluation on two user
benchmarks (MATH-500's and GPQA's schemas). It shares the smoke run's store, so the world, tokenizer and
base model are reused (same config) and only what the user's data changes is computed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="module")
def byod_run(smoke_run):
    from r1flow.flows.pipeline import pipeline

    from r1flow.recipe import load_recipe

    _, store, smoke_paths = smoke_run
    recipe = load_recipe("configs/byod_smoke.yaml", {"store": str(store)})
    return recipe, store, pipeline(recipe=recipe), smoke_paths


def _manifest(path: str) -> dict:
    return json.loads((Path(path) / "manifest.json").read_text())


def test_user_data_trains_and_evaluates_end_to_end(byod_run):
    from r1flow.data.store import ArtifactStore

    _, store, paths, smoke_paths = byod_run
    assert paths["pretrain"] == smoke_paths["pretrain"]  # the base was reused, not retrained
    imports = {k: _manifest(paths[k]) for k in ("data:gsm8k", "data:openr1", "data:math500", "data:gpqa")}
    assert imports["data:gsm8k"]["summary"]["rows"] == 16 and imports["data:gsm8k"]["stage"] == "data_import"
    # R1-Zero trained on the user's prompts (its parents: the base and the import, no world)
    rl = _manifest(paths["r1_zero"])
    assert rl["parents"] == [Path(paths["pretrain"]).name, Path(paths["data:gsm8k"]).name]
    questions = set(pq.read_table(Path(paths["r1_zero"]) / "r1flow" / "rollouts.parquet").column("prompt").to_pylist())
    assert questions and all("clips" in q for q in questions)
    # SFT on the user's messages, half of the mix (user_share 0.5)
    sft = _manifest(paths["sft_cold"])["summary"]
    assert sft["data_sources"]["openr1"] == sft["data_sources"]["r1_zero"] > 0
    # one table per named benchmark, the pooled world row untouched by them
    report = (Path(paths["report"]) / "report.md").read_text()
    for name, n in (("math500", 4), ("gpqa", 4)):
        assert f"## Benchmark: {name} ({n} problems, k=2)" in report
    ev = pq.read_table(Path(paths["evaluate:base"]) / "summary.parquet").to_pylist()
    fams = {r["family"]: r for r in ev}
    assert set(fams) == {"add", "math500", "gpqa", "reasoning (all)"}
    assert fams["reasoning (all)"]["problems"] == fams["add"]["problems"]
    # lineage names the imported data
    out = subprocess.run([sys.executable, "-m", "r1flow.cli", "lineage", Path(paths["r1_zero"]).name,
                          "--store", str(store)], capture_output=True, text=True, check=True).stdout
    assert "data_import gsm8k dataset" in out and "data_import math500 dataset" in out
    assert ArtifactStore(str(store)).verify(Path(paths["data:gsm8k"]).name)


def test_data_import_cards_are_prefect_artifacts(byod_run):
    from conftest import prefect_artifacts

    arts = prefect_artifacts("r1flow-data")
    for name in ("gsm8k", "openr1", "math500", "gpqa"):
        assert f"r1flow-data-{name}-card" in arts, sorted(arts)
    [card] = {a.data for a in arts["r1flow-data-gsm8k-card"]}  # one import, its card maybe published again
    assert "configs/byod/gsm8k_train.parquet" in card and "| math500 | 0 |" in card


def test_rerun_reuses_everything_and_a_changed_file_recomputes_what_it_feeds(byod_run, tmp_path):
    import public_schemas as ps
    from r1flow.data.store import ArtifactStore

    from r1flow.recipe import load_recipe
    from r1flow.stages import dry_run, select

    _, store, _, _ = byod_run

    def actions(overrides: dict) -> dict[str, str]:
        recipe = load_recipe("configs/byod_smoke.yaml", {"store": str(store), **overrides})
        return {r["node"]: r["action"] for r in dry_run(recipe, ArtifactStore(str(store)), select(recipe))}

    assert set(actions({}).values()) == {"reuse"}
    changed = actions({"data.gsm8k.path": str(ps.gsm8k(tmp_path / "gsm8k_train.parquet", seed=3))})
    assert changed["data:gsm8k"] == changed["r1_zero"] == changed["evaluate:r1"] == "compute"
    assert changed["pretrain"] == changed["data:math500"] == changed["evaluate:base"] == "reuse"
