"""Pipeline wall time per stage, cached re-run time, and orchestration overhead.

    python bench/pipeline.py [--recipe configs/tiny.yaml] [--store /tmp/r1flow-bench-store]

Runs the whole pipeline flow on the recipe into a fresh store (the same `pipeline` flow `make run`
calls, on a local Prefect API), then runs it again on the now-complete store. Per-stage compute is
each artifact's own `seconds` (measured inside the stage around its build); orchestration overhead is
the flow's wall time minus the stages' compute (Prefect task and flow bookkeeping, artifact hashing,
store reads, lineage and plan publishing), reported as a share of the wall time. The cached re-run's
baseline is the fresh run. Targets (issue 7): fresh run within 20 minutes on 2 cores, cached re-run
within 30 s, overhead at most 3%. Writes bench/results/pipeline_<device>.json. Never part of the tests.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from _common import OUT, device_name

from r1flow.data.store import ArtifactStore
from r1flow.recipe import load_recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="configs/tiny.yaml")
    ap.add_argument("--store", default="/tmp/r1flow-bench-store")
    args = ap.parse_args()
    shutil.rmtree(args.store, ignore_errors=True)
    recipe = load_recipe(args.recipe, {"store": args.store})
    from r1flow.flows.pipeline import pipeline

    t0 = time.perf_counter()
    paths = pipeline(recipe=recipe)
    fresh = time.perf_counter() - t0
    store = ArtifactStore(args.store)
    stages = {}
    for key, path in paths.items():
        m = store.manifest(Path(path).name)
        stages[key] = m.summary.get("seconds", 0.0)
    compute = sum(stages.values())
    t0 = time.perf_counter()
    again = pipeline(recipe=recipe)
    cached = time.perf_counter() - t0
    assert again == paths, "the cached re-run produced other artifacts"
    result = {"benchmark": "pipeline", "recipe": recipe.name, "device": device_name(),
              "fresh_wall_s": fresh, "stage_compute_s": stages, "stages_total_s": compute,
              "orchestration_overhead_s": fresh - compute, "overhead_share": (fresh - compute) / fresh,
              "cached_rerun_s": cached, "cached_vs_fresh": cached / fresh,
              "targets": {"fresh_wall_s": 1200, "cached_rerun_s": 30, "overhead_share": 0.03}}
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"pipeline_{device_name()}.json"
    out.write_text(json.dumps(result, indent=1))
    for k, v in stages.items():
        print(f"{k:<20} {v:8.1f} s")
    print(f"fresh {fresh:.0f} s (stages {compute:.0f} s, overhead {result['overhead_share']:.1%}); "
          f"cached re-run {cached:.1f} s\nwrote {out}")


if __name__ == "__main__":
    main()
