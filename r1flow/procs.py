"""Child-process ownership: whoever starts torchrun, a Prefect server or worker, or a vLLM server
stops its whole process group, so no orphan keeps a port or a GPU. No Prefect, no torch here."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the process group `proc` leads (started with start_new_session=True), then SIGKILL
    what is left after `grace` seconds: no orphan keeps a port or a GPU."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue

