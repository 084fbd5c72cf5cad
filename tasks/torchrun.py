"""Several training processes from a task: `launch` starts torchrun on a stage's worker module
(models/train/launch.py `worker_main`) and owns its process group. A module of its own, so that only the
training stages' code versions (tasks/common.py: cache keys) include torch."""

from __future__ import annotations

import json
import re
import subprocess
from collections import deque
from pathlib import Path

from r1flow.models.train.launch import Processes, torchrun_command
from r1flow.procs import stop_process_group
from r1flow.tasks.common import Progress, log


def launch(label: str, module: str, processes: Processes, spec: dict, work: Path,
           progress: Progress | None = None) -> dict:
    """Run `module`'s torchrun worker (models/train/launch.py `worker_main`) on `processes`
    (models/train/launch.py `Processes`) with `spec` (JSON), and return the summary rank 0 wrote.
    Lines the workers print with the `[label]` prefix become log lines, and their `step N` the
    progress; on failure the error carries the output's last lines (the failing rank's traceback).
    Cancellation or a crash of this task takes the whole process group (torchrun + workers) down, so no
    orphan keeps a core, a port or a GPU."""
    work.mkdir(parents=True, exist_ok=True)
    spec_path, summary_path = work / "spec.json", work / "summary.json"
    summary_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps(spec | {"summary": str(summary_path)}))
    cmd = torchrun_command(processes, module, spec_path)
    log(f"[{label}] launching: {' '.join(cmd)}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    tail: deque[str] = deque(maxlen=40)
    try:
        for line in proc.stdout:
            tail.append(line.rstrip())
            if line.startswith(f"[{label}]"):
                log(line.rstrip())
                step = re.search(r"\bstep (\d+)", line)
                if step and progress:
                    progress.update(int(step.group(1)))
        rc = proc.wait()
    except BaseException:
        stop_process_group(proc, grace=30)
        raise
    if rc != 0:
        raise RuntimeError(f"{label}: torchrun exited with code {rc}; its last lines:\n" + "\n".join(tail))
    return json.loads(summary_path.read_text())
