"""Experiment tracking (models/train/tracking.py): the session's smoke run tracks to TensorBoard and a local
MLflow SQLite store; read both back and check the scalars of pretraining, GRPO and SFT, and that the
tracker and the lineage point at each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from r1flow.data.store import ArtifactStore

pytestmark = pytest.mark.slow


def _runs(store: Path, paths: dict) -> dict:
    """Node -> (manifest, its summary's tracking record) for every tracked artifact of the smoke run (its own
    artifacts: other tests run their pipelines into the same session store)."""
    st = ArtifactStore(store)
    out = {}
    for m in (st.manifest(Path(p).name) for p in paths.values()):
        if "tracking" in m.summary:
            node = m.summary["tracking"]["run"].split()[0]
            out[node] = (m, m.summary["tracking"])
    return out


def _tb_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_training_stages_log_to_tensorboard_and_mlflow(smoke_run):
    from mlflow.tracking import MlflowClient

    recipe, store, paths = smoke_run
    runs = _runs(store, paths)
    # Every training stage computed in the run is tracked; data stages only when they train nothing.
    assert {"pretrain", "r1_zero", "sft_cold", "reasoning_rl", "sft_mix", "reward_model", "final_rl",
            "student_pretrain:qwen2_s", "distill:qwen2_s", "student_rl:qwen2_s"} <= set(runs)
    experiments = {rec["experiment"] for _, rec in runs.values()}
    assert len(experiments) == 1 and next(iter(experiments)).startswith("r1flow-smoke-")  # one pipeline run

    pre = _tb_scalars(runs["pretrain"][1]["tensorboard"])
    assert [s for s, _ in pre["train/loss"]] == list(range(1, recipe.pretrain.steps + 1))
    assert {"train/mtp_loss", "train/balance_loss", "moe/max_over_mean_load", "train/tokens_per_s",
            "train/mfu"} <= set(pre)
    rl = _tb_scalars(runs["r1_zero"][1]["tensorboard"])
    assert [s for s, _ in rl["rl/reward_mean"]] == list(range(1, recipe.r1_zero.steps + 1))
    assert {"rl/accuracy", "rl/completion_length", "time/weight_sync_s"} <= set(rl)
    assert any(t.startswith("train/") for t in rl if t not in ("train/loss", "train/grad_norm"))  # TRL's own
    sft = _tb_scalars(runs["sft_cold"][1]["tensorboard"])
    assert "train/loss" in sft and "train/learning_rate" in sft  # TRL's TensorBoard callback

    client = MlflowClient(runs["pretrain"][1]["mlflow_uri"])
    for node, keys in (("pretrain", ["train/loss", "train/mtp_loss"]), ("r1_zero", ["rl/reward_mean", "loss"]),
                       ("sft_cold", ["loss"]), ("reward_model", ["loss"])):
        m, rec = runs[node]
        run = client.get_run(rec["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.info.run_name == rec["run"]
        assert run.data.tags["r1flow.artifact_id"] == m.id and run.data.tags["r1flow.cache_key"] == m.cache_key
        for k in keys:
            assert client.get_metric_history(run.info.run_id, k), (node, k, sorted(run.data.metrics))
    hist = client.get_metric_history(runs["pretrain"][1]["mlflow_run_id"], "train/loss")
    assert [h.value for h in sorted(hist, key=lambda h: h.step)] == [v for _, v in pre["train/loss"]]


def test_tracking_is_off_by_default_and_changes_no_cache_key():
    from r1flow.recipe import load_recipe
    from r1flow.stages import STAGES, dag
    from r1flow.tasks.common import node_key

    plain = load_recipe("configs/tiny.yaml")
    assert plain.tracking.backends == []  # `make run` starts no tracker
    tracked = load_recipe("configs/tiny.yaml", {"tracking": {"backends": ["tensorboard", "mlflow"]}})
    a, b = dag(plain), dag(tracked)
    assert [n.recorded for n in a] == [n.recorded for n in b]
    w = next(n for n in a if n.key == "world")
    assert node_key(w, STAGES["world"].build, {}) == node_key(next(n for n in b if n.key == "world"),
                                                               STAGES["world"].build, {})
