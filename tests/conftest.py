"""Shared fixtures. Run everything with `make test` (or `.venv/bin/python -m pytest -q`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


@pytest.fixture(scope="session")
def prefect_harness():
    """A throwaway Prefect API (SQLite) for every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def prefect_artifacts(prefix: str) -> dict:
    """Every version of every Prefect artifact whose key starts with `prefix`, by key, from the test
    harness's API. Versions: the session's pipeline runs share keys (the smoke and BYOD runs both
    publish `r1flow-r1-zero-card`), so a test picks the one of its own run. Read page by page: the API
    returns at most 200 per call, and a session's runs publish more than that."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read() -> dict:
        out: dict[str, list] = {}
        async with get_client() as client:
            while True:
                page = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=prefix)),
                                                   offset=sum(map(len, out.values())), limit=200)
                for a in page:
                    out.setdefault(a.key, []).append(a)
                if len(page) < 200:
                    return out

    return asyncio.run(read())


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, prefect_harness):
    """The smoke recipe run once through the pipeline flow; tests read its artifacts."""
    from r1flow.flows.pipeline import pipeline
    from r1flow.recipe import load_recipe

    store = tmp_path_factory.mktemp("store")
    # With TensorBoard and MLflow on (tests/test_tracking.py reads them back).
    runs = tmp_path_factory.mktemp("runs")
    recipe = load_recipe("configs/smoke.yaml", {"store": str(store),
                                                "tracking": {"backends": ["tensorboard", "mlflow"], "dir": str(runs)}})
    paths = pipeline(recipe=recipe)
    return recipe, store, paths


@pytest.fixture(scope="session")
def pretrain_data(tmp_path_factory):
    """(corpus, held-out, tokenizer dir) of a small task world: the positional inputs of
    `models.pretrain.pretrain`, shared by the pretraining and FP8 tests."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from r1flow.data import world
    from r1flow.models.arch.tokenizer import TokenizerConfig, train_tokenizer

    d = tmp_path_factory.mktemp("pretrain-data")
    cfg = world.WorldConfig(corpus_docs=1500)
    w = world.World(cfg)
    pq.write_table(pa.Table.from_pylist(world.build_corpus(w, cfg)), d / "corpus.parquet")
    pq.write_table(pa.Table.from_pylist(world.build_corpus(w, cfg, split="eval", n_docs=200)), d / "heldout.parquet")
    train_tokenizer([r["text"] for r in world.build_corpus(w, cfg)],
                    TokenizerConfig(vocab_size=400)).save_pretrained(d / "tok")
    return d / "corpus.parquet", d / "heldout.parquet", d / "tok"


def with_teacher(recipe, source: str):
    """`recipe` with distill.teacher_from = `source`. smoke.yaml's export list names `base`, which a
    teacher from elsewhere removes from the run, so the copy exports the default (the teacher
    and the distilled students); the explicit list is refused (tests/test_stages.py)."""
    return recipe.model_copy(update={"distill": recipe.distill.model_copy(update={"teacher_from": source}),
                                     "export": recipe.export.model_copy(update={"checkpoints": None})})


@pytest.fixture
def worker_env(monkeypatch):
    """Runs a training stage on several processes (tasks/torchrun.py `launch`) with tests/dist_worker.py as the
    torchrun worker: the stage's own worker with the `length` reward registered in every process."""
    from r1flow.data import rewards
    from r1flow.tasks.torchrun import launch

    tests = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(tests)
    import dist_worker

    monkeypatch.setitem(rewards.REWARDS, "length", dist_worker.length_reward)  # for the one-process runs here

    def run(stage: str, cfg, spec: dict, work: Path, kill_at: int | None = None) -> dict:
        monkeypatch.setenv("R1FLOW_TEST_STAGE", stage)
        if kill_at:
            monkeypatch.setenv("R1FLOW_TEST_KILL_AT", str(kill_at))
        else:
            monkeypatch.delenv("R1FLOW_TEST_KILL_AT", raising=False)
        return launch(stage, "dist_worker", cfg, {"config": cfg.model_dump(mode="json"), "stage": stage,
                                                  "work": str(work)} | spec, work)

    return run
