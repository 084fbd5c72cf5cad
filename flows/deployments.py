"""Prefect deployments of the r1flow flows, and `r1flow serve`: server, work pool, deployments, worker.

    r1flow serve --recipe configs/tiny.yaml      # or: make serve; the UI is on http://127.0.0.1:4200

Deployments name their flows by module path (`r1flow.flows.pipeline.pipeline`), so any worker whose
Python has r1flow installed runs them without shipping source: the local process worker that
`serve` starts, or Docker and Kubernetes workers on GPU nodes whose image is the project's
Dockerfile (prefect.yaml). Each deployment takes the recipe as its parameter (a form in the UI,
from the recipe's pydantic schema) plus the resume options; the pipeline deployment carries the
recipe's retraining schedule. `serve` owns the processes it starts and stops them on Ctrl-C or
SIGTERM, so no orphan is left holding a port or a GPU. This module runs no stage itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from uuid import UUID

from r1flow.flows.pipeline import STAGE_FLOWS, pipeline
from r1flow.recipe import Recipe
from r1flow.stages import STAGES
from r1flow.procs import stop_process_group as stop

POOL = "r1flow-local"


def deployments(recipe: Recipe, work_pool: str = POOL) -> list:
    """RunnerDeployments: the whole pipeline (with the recipe's schedule) and one per stage."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    # Workers run flows in their own working directory: pin a local store to an absolute path.
    root = recipe.store_root()
    recipe = recipe.model_copy(update={"store": root if "://" in root else str(Path(root).resolve())})
    params = {"recipe": recipe.model_dump(mode="json")}
    sched = recipe.schedule
    schedules = [Cron(sched.cron, timezone=sched.timezone, active=sched.active)] if sched else None
    common = {"entrypoint_type": EntrypointType.MODULE_PATH, "work_pool_name": work_pool,
              "tags": ["r1flow", f"recipe:{recipe.name}"], "version": recipe.name}
    out = [pipeline.to_deployment(name=recipe.name, parameters=params, schedules=schedules,
                                  description=f"The whole DAG on recipe {recipe.name!r}; from_stage, until_stage "
                                              "and force choose the part to (re)run.", **common)]
    for stage, fl in STAGE_FLOWS.items():
        out.append(fl.to_deployment(name=recipe.name, parameters=params,
                                    description=f"Only the {stage} stage of recipe {recipe.name!r}: "
                                                f"{STAGES[stage].what}.", **common))
    return out


def register(recipe: Recipe, work_pool: str = POOL) -> list[UUID]:
    """Create the process work pool if it is missing and register (or update) the deployments."""
    from prefect import deploy
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=work_pool, type="process",
                                                   description="r1flow: local process worker (r1flow serve)"))
        except ObjectAlreadyExists:
            pass
    return list(deploy(*deployments(recipe, work_pool), work_pool_name=work_pool, build=False, push=False,
                       print_next_steps_message=False, ignore_warnings=True))


def wait_healthy(api_url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Block until the Prefect API answers /health; fail early if the server process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no Prefect API at {api_url} after {timeout:.0f} s")


def start_worker(work_pool: str = POOL, env: dict | None = None, run_once: bool = False) -> subprocess.Popen:
    """A Prefect process worker for `work_pool`, in its own process group (so stopping it stops the
    flow runs it started)."""
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", work_pool, "--type", "process"]
    return subprocess.Popen(cmd + (["--run-once"] if run_once else []), env=env, start_new_session=True)


def serve(recipe: Recipe, recipe_path: Path, host: str = "127.0.0.1", port: int = 4200) -> None:
    """Start (or reuse, when PREFECT_API_URL is set) a Prefect server, register the deployments,
    run a local worker, and wait for Ctrl-C or SIGTERM."""
    env = dict(os.environ)
    procs: list[subprocess.Popen] = []
    try:
        if "PREFECT_API_URL" not in env:
            env["PREFECT_API_URL"] = f"http://{host}:{port}/api"
            server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host,
                                       "--port", str(port)], env=env, start_new_session=True)
            procs.append(server)
            print(f"[serve] starting Prefect server on http://{host}:{port} "
                  f"(database: {os.environ.get('PREFECT_API_DATABASE_CONNECTION_URL', 'SQLite in PREFECT_HOME')})",
                  flush=True)
            wait_healthy(env["PREFECT_API_URL"], proc=server)
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
            ids = register(recipe)
        print(f"[serve] registered {len(ids)} deployments of {recipe_path} on work pool {POOL!r}", flush=True)
        procs.append(start_worker(env=env))
        ui = env["PREFECT_API_URL"].removesuffix("/api")
        print(f"[serve] worker started; open {ui}/deployments to run or schedule a flow. Ctrl-C stops all.",
              flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        dead = next(p for p in procs if p.poll() is not None)
        raise RuntimeError(f"{' '.join(dead.args[2:5])} exited with code {dead.returncode}")
    except KeyboardInterrupt:
        print("[serve] stopping", flush=True)
    finally:
        for p in reversed(procs):
            stop(p)
