"""Shared fixtures. Run everything with `make test` (or `.venv/bin/python -m pytest -q`)."""

from __future__ import annotations

import os

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


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, prefect_harness):
    """The smoke recipe run once through the pipeline flow; tests read its artifacts."""
    from r1flow.flows.pipeline import pipeline
    from r1flow.recipe import load_recipe

    store = tmp_path_factory.mktemp("store")
    recipe = load_recipe("configs/smoke.yaml", {"store": str(store)})
    paths = pipeline(recipe=recipe)
    return recipe, store, paths
