"""Rollouts from a fleet of vLLM OpenAI-compatible servers: the `RolloutEngine` of models/rollout/engine.py
over HTTP, for GPU nodes where generation runs on other GPUs than training.

`VLLMServerFleet` either connects to servers that already run (`EngineConfig.servers`, e.g. one
`vllm serve` per node, tensor-parallel inside it) or launches `launch_servers` of them on loopback
(what the tests and a one-node run use; with several training processes the first launches them and all
share them). Prompts are spread over the servers group by group: a
prompt's G samples stay on one server, so its prefix is cached once. Each request keeps the seed it
would have had in-process (`seed + index`), so which server serves it does not change the draw.

Weights, each GRPO step (`sync_from`): with `engine.weight_transfer` nccl or gloo (auto: nccl where CUDA
is), the trainer broadcasts its tensors to every server through vLLM's weight-transfer API
(models/rollout/transfer.py); nothing is written, so remote servers need no shared filesystem. With `disk`,
the trainer writes a checkpoint directory and every server loads it through `/collective_rpc`
(vLLM's dev endpoints, `VLLM_SERVER_DEV_MODE=1`) into `server_ext.WeightSyncExtension.r1flow_update_weights`,
which vLLM mixes into its worker class (`--worker-extension-cls`); the directory must be readable by the servers.
That path also loads the stage's start checkpoint into servers someone else started (`update_weights`).
Both paths re-run the CPU experts' prepack (vLLM's reload alone leaves CPU MoE experts wrong; see
`VLLMEngine.update_weights`) and reset the prefix cache.
This module does not sample in-process and does not score completions.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from r1flow.models.rollout.engine import Completion, EngineConfig, SamplingConfig, check_checkpoint, vllm_args
from r1flow.models.train.launch import rank


# Every server's `--worker-extension-cls` (the module imports vLLM, so only its name is here).
EXTENSION = "r1flow.models.rollout.server_ext.WeightSyncExtension"


def server_flags(args: dict) -> list[str]:
    """`vllm serve` flags for `vllm.LLM` keyword arguments (models/rollout/engine.py: `vllm_args`):
    `--snake-case value`, booleans as `--flag` / `--no-flag`, dictionaries as JSON."""
    out = []
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        else:
            out += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    return out


def _process_count() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerLaunchError(RuntimeError):
    pass


class VLLMServerFleet:
    """`RolloutEngine` over vLLM OpenAI-compatible servers (see the module docstring)."""

    def __init__(self, model_dir: str, cfg: EngineConfig, log_dir: Path | None = None):
        import httpx

        self.model_dir = model_dir
        self.cfg = cfg
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="r1flow-vllm-servers-"))
        self.procs: list[subprocess.Popen] = []
        self.urls = [u.rstrip("/") for u in cfg.servers]
        self.http = httpx.Client(timeout=cfg.request_timeout_s)
        self.transfer = cfg.weight_transfer
        if self.transfer == "auto":
            import torch

            self.transfer = "nccl" if torch.cuda.is_available() else "gloo"
        self.broadcaster = None  # transfer.WeightBroadcaster, opened by the first process at its first sync
        try:
            # Several training processes share one fleet: the first launches the servers, the others get their URLs.
            shared = bool(cfg.launch_servers) and _process_count() > 1
            if not shared or rank() == 0:
                for i in range(cfg.launch_servers):
                    self.urls.append(self._launch(i))
            self._wait_ready()
            if shared:
                import torch.distributed as dist

                urls = [self.urls]
                dist.broadcast_object_list(urls, src=0)  # after the first process saw them healthy
                self.urls = urls[0]
            self.requests = [0] * len(self.urls)  # per server, for the stage summary
            self.served = self._served_model()
            if cfg.launch_servers == 0 and rank() == 0:  # servers someone else started hold other weights
                self.update_weights(model_dir)
        except BaseException:
            self.close()
            raise
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=cfg.trust_remote_code)

    def _log(self, i: int) -> Path:
        return self.log_dir / f"vllm-server-{i}.log"

    def _launch(self, i: int) -> str:
        port = free_port()
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_dir,
               "--host", "127.0.0.1", "--port", str(port), *server_flags(vllm_args(self.cfg)),
               "--worker-extension-cls", EXTENSION, "--disable-uvicorn-access-log"]
        if self.transfer != "disk":
            cmd += ["--weight-transfer-config", json.dumps({"backend": self.transfer})]
        env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self._log(i), "w") as log:
            # Own process group: close() stops the server and every engine process it started.
            self.procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True))
        return f"http://127.0.0.1:{port}"

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.cfg.startup_timeout_s
        pending = list(self.urls)
        while pending:
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    raise ServerLaunchError(f"vLLM server {i} exited with code {p.returncode} while starting "
                                            f"(model {self.model_dir}); log: {self._log(i)}")
            for url in list(pending):
                try:
                    if self.http.get(f"{url}/health", timeout=2).status_code == 200:
                        pending.remove(url)
                except httpx.TransportError:
                    pass
            if pending and time.monotonic() > deadline:
                raise ServerLaunchError(f"vLLM server(s) {pending} not healthy after "
                                        f"{self.cfg.startup_timeout_s}s; "
                                        f"logs in {self.log_dir}")
            if pending:
                time.sleep(1)

    def _served_model(self) -> str:
        names = {self.http.get(f"{u}/v1/models").raise_for_status().json()["data"][0]["id"]
                 for u in self.urls}
        if len(names) != 1:
            raise ServerLaunchError(f"servers {self.urls} serve different models: {sorted(names)}")
        return names.pop()

    def _post(self, url: str, path: str, body: dict) -> dict:
        r = self.http.post(f"{url}{path}", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"vLLM server {url}{path} answered {r.status_code}: {r.text[:500]}")
        return r.json() if r.content else {}

    def _get(self, url: str, path: str) -> dict:
        return self.http.get(f"{url}{path}").raise_for_status().json()

    def _spread(self, jobs: list[dict]) -> list[dict]:
        """Run request bodies round-robin over the servers, concurrently; answers in job order."""
        for k in range(len(jobs)):
            self.requests[k % len(self.urls)] += 1
        with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), 8 * len(self.urls)))) as pool:
            futs = [pool.submit(self._post, self.urls[k % len(self.urls)], "/v1/completions", body)
                    for k, body in enumerate(jobs)]
            return [f.result() for f in futs]

    def generate(self, prompts: list[str], sampling: SamplingConfig, n: list[int] | None = None,
                 logprobs: bool = False) -> list[list[Completion]]:
        jobs = [{"model": self.served, "prompt": p, "n": n[i] if n else sampling.n,
                 "temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": sampling.max_tokens,
                 "seed": sampling.seed + i, "skip_special_tokens": False, "return_token_ids": True,
                 **({"logprobs": 0, "return_tokens_as_token_ids": True} if logprobs else {})}
                for i, p in enumerate(prompts)]
        out = []
        for resp in self._spread(jobs):
            group = []
            for c in sorted(resp["choices"], key=lambda c: c["index"]):
                lps = c["logprobs"]["token_logprobs"] if logprobs else None
                group.append(Completion(text=c["text"], token_ids=list(c["token_ids"]),
                                        finish_reason=c.get("finish_reason") or "length",
                                        prompt_token_ids=list(c.get("prompt_token_ids") or []), logprobs=lps))
            out.append(group)
        return out

    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        jobs = [{"model": self.served, "prompt": s, "max_tokens": 1, "prompt_logprobs": 0,
                 "return_tokens_as_token_ids": True} for s in sequences]
        out = []
        for s, resp in zip(sequences, self._spread(jobs)):
            plp = resp["choices"][0]["prompt_logprobs"]  # [None, {token_id: {logprob, ...}, ...}, ...]
            out.append([plp[t][str(s[t])]["logprob"] for t in range(1, len(s))])
        return out

    def sync_from(self, model, scratch: Path) -> None:
        """Give every server `model`'s weights: `checkpoint_tensors(model)` (what `save_pretrained` writes, LoRA
        merged, FSDP shards gathered), broadcast (`weight_transfer` nccl / gloo) or through `scratch` (disk:
        the one place r1flow still writes weights to sync them; the servers read it, so it must be on storage
        they share). With several training processes every one calls this (the gather is collective); the
        first sends and the others wait for it: one sync per step, however many processes train."""
        import torch

        from r1flow.models.rollout.engine import checkpoint_tensors, is_sharded

        # Only the first process sends; the others convert too only when their shards must be gathered.
        first = rank() == 0
        if first or is_sharded(model):
            with torch.no_grad():
                tensors = checkpoint_tensors(model)
        if first and self.transfer == "disk":
            sync_through_disk(self, tensors, scratch)
        elif first:
            if self.broadcaster is None:
                from r1flow.models.rollout.transfer import WeightBroadcaster

                self.broadcaster = WeightBroadcaster(self.urls, self._post, self._get, self.transfer,
                                                     timeout_s=self.cfg.request_timeout_s)
            self.broadcaster.send({k: v.detach() for k, v in tensors.items()})
            for url in self.urls:
                self._post(url, "/reset_prefix_cache", {})
        if torch.distributed.is_initialized():
            torch.distributed.barrier()  # no process samples before the servers hold the new weights

    def update_weights(self, checkpoint_dir: str) -> None:
        path = str(Path(checkpoint_dir).resolve())
        for url in self.urls:
            self._post(url, "/collective_rpc",
                       {"method": "r1flow_update_weights", "kwargs": {"weights_path": path}})
            self._post(url, "/reset_prefix_cache", {})

    def close(self) -> None:
        from r1flow.procs import stop_process_group

        if self.broadcaster is not None:
            self.broadcaster.close()
            self.broadcaster = None
        for p in self.procs:
            stop_process_group(p)
        self.procs = []
        self.http.close()


def sync_through_disk(engine, tensors: dict, scratch: Path) -> None:
    """`tensors` written to `scratch` as a checkpoint and loaded by `engine.update_weights` (fleet `disk`; the
    in-process engine's sync before issue 21, which bench/grpo_step.py --sync measures against)."""
    import shutil

    from safetensors.torch import save_file

    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(scratch / "model.safetensors"),
              metadata={"format": "pt"})
    engine.update_weights(str(scratch))


def make_engine(model_dir: str, cfg: EngineConfig, log_dir: Path | None = None):
    """The recipe's rollout engine: in-process vLLM, or a server fleet when servers are configured."""
    check_checkpoint(model_dir)
    if cfg.servers or cfg.launch_servers:
        return VLLMServerFleet(model_dir, cfg, log_dir)
    from r1flow.models.rollout.engine import VLLMEngine

    return VLLMEngine(model_dir, cfg)
