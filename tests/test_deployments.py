"""Deployments on a work pool, run by a Prefect worker; a crashed worker's run retried without
recomputing finished stages.   pytest tests/test_deployments.py"""

from __future__ import annotations

import os
import signal
import time

import pytest

from r1flow.data.store import ArtifactStore
from r1flow.flows.deployments import register, start_worker, stop
from r1flow.recipe import ScheduleConfig, load_recipe
from r1flow.stages import STAGES

pytestmark = pytest.mark.slow
STAGE_DEPLOYMENTS = {f"r1flow-{s}" for s in STAGES}  # one per declared stage (r1flow/stages.py)


def _worker_env() -> dict:
    from prefect.settings import PREFECT_API_URL

    return dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_WORKER_QUERY_SECONDS="1")


def _wait(client, run_id, states: set[str], timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state and run.state.type.value in states:
            return run
        time.sleep(1)
    raise TimeoutError(f"flow run {run_id} not in {states} after {timeout:.0f} s (state {run.state})")


def _run_to_completion(client, run_id, pool: str):
    """A worker on `pool` until the run ends; the run must end COMPLETED."""
    worker = start_worker(pool, env=_worker_env())
    try:
        run = _wait(client, run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout=600)
    finally:
        stop(worker)
    assert run.state.type.value == "COMPLETED", _logs(client, run_id)[-3000:]
    return run


def _logs(client, run_id) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200)
    return "\n".join(entry.message for entry in logs)


def test_pipeline_deployment_runs_on_a_worker_and_its_artifacts_are_in_the_api(smoke_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment

    recipe, store_root, paths = smoke_run
    before = {m.id for m in ArtifactStore(store_root).list()}
    recipe = recipe.model_copy(update={"schedule": ScheduleConfig(cron="0 3 * * 0", active=False)})
    ids = register(recipe, work_pool="r1flow-test-a")
    assert len(ids) == 1 + len(STAGE_DEPLOYMENTS)
    with get_client(sync_client=True) as client:
        deps = {client.read_flow(d.flow_id).name: d for d in client.read_deployments()
                if d.work_pool_name == "r1flow-test-a"}
        assert set(deps) == {"r1flow-pipeline"} | STAGE_DEPLOYMENTS
        pipe = deps["r1flow-pipeline"]
        assert pipe.entrypoint == "r1flow.flows.pipeline.pipeline"
        # The recipe is the UI's form: its schema, with the stage sections, and the recipe as default.
        assert {"world", "pretrain", "r1_zero"} <= set(pipe.parameter_openapi_schema["definitions"]["Recipe"]["properties"])
        assert pipe.parameters["recipe"]["name"] == "smoke"
        assert [(s.schedule.cron, s.active) for s in pipe.schedules] == [("0 3 * * 0", False)]

        run = run_deployment(f"r1flow-pipeline/{recipe.name}", timeout=0)
        run = _run_to_completion(client, run.id, "r1flow-test-a")
        # Everything was cached by the session's smoke run: the worker reused it and wrote nothing new.
        assert {m.id for m in ArtifactStore(store_root).list()} == before
        arts = {a.key: a for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))}
        assert "r1flow-lineage" in arts and "graph" in arts["r1flow-lineage"].data
        assert os.path.basename(paths["r1_zero"])[:12] in arts["r1flow-lineage"].data
        assert "r1flow-report" in arts


def test_worker_killed_mid_run_then_retried_does_not_recompute_finished_stages(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import AwaitingRetry, Crashed

    store_root = tmp_path / "store"
    recipe = load_recipe("configs/smoke.yaml", {"store": str(store_root)})
    register(recipe, work_pool="r1flow-test-b")
    store = ArtifactStore(store_root)
    with get_client(sync_client=True) as client:
        run = run_deployment(f"r1flow-pipeline/{recipe.name}", timeout=0, parameters={"until_stage": "pretrain"})
        worker = start_worker("r1flow-test-b", env=_worker_env())
        try:
            deadline = time.monotonic() + 300

            def pretraining() -> bool:  # tokenizer sealed, and a work dir that is not the tokenizer's
                done = {m.cache_key for m in store.list() if m.stage in ("world", "tokenizer")}
                work = {d.name for d in (store_root / "work").glob("*")} if store_root.exists() else set()
                return len(done) == 2 and bool(work - done)

            while not pretraining():
                assert worker.poll() is None and time.monotonic() < deadline, "the worker never reached pretrain"
                time.sleep(0.2)
            # Pretraining has started: crash the worker and the flow run it started, with no clean-up.
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(30)
        finally:
            stop(worker)
        finished = {m.stage: (m.id, m.created) for m in store.list()}
        assert set(finished) == {"world", "tokenizer"}
        assert client.read_flow_run(run.id).state.type.value == "RUNNING"  # nobody told the API
        # What the UI does: the lost run is marked crashed, then "Retry" puts it back in the queue.
        client.set_flow_run_state(run.id, Crashed(message="worker killed"), force=True)
        client.set_flow_run_state(run.id, AwaitingRetry(), force=True)
        run = _run_to_completion(client, run.id, "r1flow-test-b")
        assert run.run_count == 2
    # The retry reused world and tokenizer (same artifacts, same creation times) and made pretrain.
    after = {m.stage: (m.id, m.created) for m in store.list()}
    assert set(after) == {"world", "tokenizer", "pretrain"}
    assert after["world"] == finished["world"] and after["tokenizer"] == finished["tokenizer"]
    # The killed attempt's half-written files never became an artifact: every object has a manifest.
    assert all((d / "manifest.json").exists() for d in (store_root / "objects").iterdir())


@pytest.mark.parametrize("name", ["deepseek-r1-docker", "deepseek-r1-k8s", "pretrain-k8s"])
def test_prefect_yaml_deployments_load_and_k8s_jobs_get_gpus(name):
    """prefect.yaml's GPU deployments: the entrypoint loads, the recipe file validates, and the Kubernetes
    job variables fit configs/k8s-gpu-job-template.json and render GPUs, selector and tolerations."""
    import json
    from pathlib import Path

    import jsonschema
    import yaml
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.templating import apply_values

    root = Path(__file__).resolve().parents[1]
    dep = next(d for d in yaml.safe_load((root / "prefect.yaml").read_text())["deployments"] if d["name"] == name)
    fl = load_flow_from_entrypoint(str(root / dep["entrypoint"]))
    assert "recipe_file" in fl.parameters.properties
    load_recipe(root / dep["parameters"]["recipe_file"])
    jv = dep["work_pool"]["job_variables"]
    assert jv["image"] == "r1flow:gpu"
    if dep["work_pool"]["name"] != "r1flow-k8s":
        assert jv["container_create_kwargs"]["device_requests"][0]["capabilities"] == [["gpu"]]
        return
    template = json.loads((root / "configs" / "k8s-gpu-job-template.json").read_text())
    schema = template["variables"]
    jsonschema.validate(jv, schema)
    values = {k: v.get("default") for k, v in schema["properties"].items()} | jv
    job = apply_values(template["job_configuration"], values)["job_manifest"]
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == jv["gpu_count"]
    assert pod["tolerations"] == jv["tolerations"]
    assert pod["nodeSelector"] == jv.get("node_selector", {})
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "r1flow-store"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(jv | {"gpu_count": -1}, schema)
