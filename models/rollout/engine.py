"""The rollout side: one small interface (`RolloutEngine`) and its in-process vLLM implementation.

Every sampled completion in r1flow (evaluation now; RL rollouts, rejection sampling and distillation
traces later) goes through `RolloutEngine.generate`; `prompt_logprobs` scores given token sequences,
which is how tests hold the engine to the trainer's numbers. A fleet of vLLM servers implements the
same interface over HTTP (models/rollout/fleet.py, `make_engine` picks one). This module does not score
or aggregate completions.

vLLM on CPU, two things this wrapper sets on purpose:
  * `compilation_config.custom_ops = ["all", "-rotary_embedding"]`. vLLM's CPU `rotary_embedding`
    kernel (`RotaryEmbedding.forward_cpu` -> `ops.rotary_embedding`, in place) mis-rotates a query
    that is a strided view. DeepSeek MLA always passes one: `q[..., qk_nope_head_dim:]` of a
    (T, heads, nope + rope) tensor (vllm/model_executor/layers/mla.py). Position 0 (no rotation)
    was exact and later positions drifted by up to 6e-2 in log-prob. The native PyTorch RoPE
    (`forward_native`) returns the right values and makes vLLM agree with transformers to ~5e-7
    (tests/test_engine_parity.py). GPUs use the CUDA kernel, which handles strides; the override
    is CPU-only.
  * `VLLM_ENABLE_V1_MULTIPROCESSING=0`: the engine core runs in this process, so startup is
    faster and the model's weights are reachable for in-place updates.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


class SamplingConfig(BaseModel):
    """How completions are sampled. Defaults are the R1 paper's evaluation settings (sec. 3.1)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(4, ge=1, description="Samples per prompt (k).")
    temperature: float = Field(0.6, ge=0, description="Sampling temperature (R1 eval: 0.6).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass (R1 eval: 0.95).")
    max_tokens: int = Field(128, ge=1, description="Longest completion in tokens.")
    seed: int = Field(0, description="Base seed; request i uses seed + i, so results are reproducible.")


class EngineConfig(BaseModel):
    """vLLM engine settings."""

    model_config = ConfigDict(extra="forbid")

    dtype: str = Field("auto", description="auto: float32 on CPU (bit-level parity with the trainer), "
                                           "bfloat16 on GPU.")
    memory_fraction: float = Field(0.9, gt=0, le=0.95, description="vLLM gpu_memory_utilization (GPU only).")
    kv_cache_gib: float = Field(
        1.0, gt=0, description="CPU only: KV cache size in GiB, passed as kv_cache_memory_bytes. Without it vLLM "
                               "sizes the cache as a share of the NUMA node minus this process's RSS, which "
                               "fails after a training stage has run in the same process.")
    max_model_len: int = Field(512, ge=16, description="Longest prompt + completion.")
    enforce_eager: bool = Field(True, description="Skip graph capture/compilation (faster start on CPU).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine (GPU nodes).")
    trust_remote_code: bool = Field(False, description="Allow model code from the checkpoint; off by default.")
    servers: list[str] = Field(default_factory=list, description=(
        "URLs of running vLLM OpenAI-compatible servers (started with VLLM_SERVER_DEV_MODE=1, "
        "--worker-extension-cls r1flow.models.rollout.server_ext.WeightSyncExtension and "
        "--weight-transfer-config '{\"backend\": \"nccl\"}' (gloo on CPU)); rollouts are spread over them "
        "(models/rollout/fleet.py). Empty: in-process vLLM."))
    launch_servers: int = Field(0, ge=0, description="Start this many vLLM servers on loopback for the stage "
                                                    "(and stop them after it); added to `servers`.")
    weight_transfer: Literal["auto", "nccl", "gloo", "disk"] = Field(
        "auto", description="Fleet: how a GRPO step's weights reach the servers (models/rollout/transfer.py). "
                            "nccl / gloo: broadcast from the trainer through vLLM's weight-transfer API, nothing "
                            "written; auto: nccl where CUDA is, else gloo; disk: a checkpoint directory the "
                            "servers read, so it must be on storage they share.")
    startup_timeout_s: float = Field(600.0, gt=0, description="Fleet: how long servers may take to become healthy.")
    request_timeout_s: float = Field(600.0, gt=0, description="Fleet: one HTTP request's limit.")


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS / stop string) or "length"
    prompt_token_ids: list[int] | None = None
    logprobs: list[float] | None = None  # raw model log-prob of each sampled token (before temperature)


class RolloutEngine(Protocol):
    def generate(self, prompts: list[str], sampling: SamplingConfig, n: list[int] | None = None,
                 logprobs: bool = False) -> list[list[Completion]]: ...

    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float]]: ...

    def update_weights(self, checkpoint_dir: str) -> None: ...

    def sync_from(self, model, scratch: Path) -> None:
        """Give the engine exactly `model`'s current weights; `scratch` is a directory it may use."""
        ...

    def close(self) -> None: ...


def checkpoint_tensors(model) -> dict:
    """The tensors `model.save_pretrained` would write, by the names and in the layout of the checkpoint
    (what vLLM's loaders read), without writing them. transformers holds some models' weights in another
    layout than their checkpoints (DeepSeek-V3's routed experts fused into one (E, 2I, H) tensor, the
    checkpoint has one gate/up/down matrix per expert); `save_pretrained` reverts that with
    `revert_weight_conversion` after dropping tied weights, and so does this, with the same two
    functions. Tensors share memory with the model where no conversion applies. A PEFT model gives its
    base's tensors with the LoRA updates added (models/train/lora.py: `merged_state_dict`)."""
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    from r1flow.models.train.lora import is_peft, merged_state_dict

    if is_peft(model):
        base = model.get_base_model()
        return revert_weight_conversion(base, remove_tied_weights_from_state_dict(merged_state_dict(model), base))
    return revert_weight_conversion(model, remove_tied_weights_from_state_dict(full_state_dict(model), model))


def is_sharded(model) -> bool:
    """Whether FSDP2 holds `model`'s parameters as shards (DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_state_dict(model) -> dict:
    """`model.state_dict()`, with FSDP2's shards (DTensors) gathered into whole tensors: every process of
    the group must call it (one all-gather per tensor, in the same order everywhere)."""
    from torch.distributed.tensor import DTensor

    return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in model.state_dict().items()}


def check_checkpoint(path: str | os.PathLike) -> None:
    """Fail early, naming the file, when a checkpoint directory does not hold a matching model and
    tokenizer (a tokenizer with more tokens than the model's embedding rows would index past them)."""
    import json
    from pathlib import Path

    from transformers import AutoTokenizer

    p = Path(path)
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"{p}: not a Hugging Face checkpoint directory (no config.json)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except ValueError as e:
        raise ValueError(f"{cfg_file}: not valid JSON ({e})") from e
    vocab = cfg.get("vocab_size") or cfg.get("text_config", {}).get("vocab_size")
    try:
        tok = AutoTokenizer.from_pretrained(str(p))
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: no loadable tokenizer next to the model ({e})") from e
    if vocab is not None and len(tok) > vocab:
        raise ValueError(f"{p}: the tokenizer does not match the checkpoint: it has {len(tok)} tokens, "
                         f"config.json vocab_size is {vocab}")
    if tok.eos_token_id is None:
        raise ValueError(f"{p}: the tokenizer has no EOS token; completions could never end")


def on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def vllm_args(cfg: EngineConfig) -> dict:
    """The vLLM engine arguments r1flow sets, as `vllm.LLM` keywords. The fleet hands the same
    dictionary to `vllm serve` as flags (models/rollout/fleet.py: `server_flags`), so an in-process
    engine and a server always run with the same settings.

    On CPU:
      * `compilation_config.custom_ops = ["all", "-rotary_embedding"]`: see the module docstring.
      * `kv_cache_memory_bytes`: see EngineConfig.kv_cache_gib.
      * `enable_chunked_prefill=False`, working around a vLLM CPU bug, as vLLM's CPU platform already
        does for MLA models (vllm/platforms/cpu.py, `check_and_update_config`). With it on, a prompt
        split over two steps has its first sampled token discarded and the model runner (the GPU one,
        also used on CPU) rewinds the request's seeded generator with
        `gen.set_offset(gen.get_offset() - 4)` (`_bookkeeping_sync`); a CPU torch.Generator has no
        offset: "RuntimeError: CPU Generator does not use offset". Every request here is seeded, so
        any dense model (the stage-9 students) crashed once a batch exceeded the token budget.
    """
    cpu = on_cpu()
    args = {"dtype": cfg.dtype if cfg.dtype != "auto" else ("float32" if cpu else "bfloat16"),
            "max_model_len": cfg.max_model_len, "enforce_eager": cfg.enforce_eager,
            "tensor_parallel_size": cfg.tensor_parallel_size, "trust_remote_code": cfg.trust_remote_code,
            "gpu_memory_utilization": cfg.memory_fraction, "seed": 0}
    if cpu:
        args |= {"compilation_config": {"custom_ops": ["all", "-rotary_embedding"]},
                 "kv_cache_memory_bytes": int(cfg.kv_cache_gib * 2**30), "enable_chunked_prefill": False}
    return args


def repack_cpu_moe(model) -> int:
    """Re-run the CPU experts' weight prepack on every fused-MoE layer (see update_weights)."""
    n = 0
    for module in model.modules():
        kernel = getattr(getattr(module, "quant_method", None), "moe_kernel", None)
        if kernel is not None:
            kernel.fused_experts.process_weights_after_loading(module)
            n += 1
    return n


class VLLMEngine:
    """In-process vLLM `LLM` over a Hugging Face checkpoint directory."""

    def __init__(self, model_dir: str, cfg: EngineConfig | None = None):
        cfg = cfg or EngineConfig()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.model_dir = model_dir
        args = vllm_args(cfg)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # One engine per training process (torchrun; models/train/launch.py), as TRL's colocate mode
            # does: vLLM joins the processes torchrun started instead of starting its own, and each
            # engine serves its own process's prompts.
            args["distributed_executor_backend"] = "external_launcher"
        self.llm = LLM(model=model_dir, **args)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: list[str], sampling: SamplingConfig, n: list[int] | None = None,
                 logprobs: bool = False) -> list[list[Completion]]:
        """Sample `sampling.n` (or n[i]) completions of each prompt. With `logprobs`, each completion
        carries the raw log-prob of every sampled token (vLLM's default logprobs mode)."""
        from vllm import SamplingParams

        params = [SamplingParams(n=n[i] if n else sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                 max_tokens=sampling.max_tokens, seed=sampling.seed + i, skip_special_tokens=False,
                                 logprobs=0 if logprobs else None)
                  for i in range(len(prompts))]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        return [[Completion(text=c.text, token_ids=list(c.token_ids), finish_reason=c.finish_reason or "length",
                            prompt_token_ids=list(o.prompt_token_ids),
                            logprobs=[lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs)] if logprobs else None)
                 for c in o.outputs] for o in outs]

    def update_weights(self, checkpoint_dir: str) -> None:
        """Load new weights (a Hugging Face checkpoint directory) into the running engine.

        vLLM's in-place `reload_weights` alone leaves the engine wrong on CPU for MoE models (log-prob
        gaps of 1 to 5 nats, even when reloading identical weights): `UnquantizedFusedMoEMethod`
        re-runs the experts' `process_weights_after_loading`, which prepacks w13/w2 into the CPU
        grouped-GEMM layout, only on the first load (`if not is_weight_update`), so reloaded expert
        weights stay in checkpoint layout while the CPU kernel reads them as packed. We re-run that
        prepack after the reload. Cached prefixes hold keys/values of the old weights: reset them.
        tests/test_grpo.py holds the engine to the trainer's log-probs after optimizer steps."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": checkpoint_dir})
        self._after_reload()

    def load_weights(self, tensors: dict) -> None:
        """Load weights from memory: checkpoint names -> tensors (`checkpoint_tensors`). The engine core runs
        in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so `collective_rpc` calls the worker directly and
        vLLM's `reload_weights` copies from the trainer's tensors; nothing is serialised or written. Then the
        same CPU MoE prepack and prefix-cache reset as `update_weights`."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(tensors.items())})
        self._after_reload()

    def sync_from(self, model, scratch: Path) -> None:
        """In memory; `scratch` is not used (no checkpoint per step)."""
        import torch

        with torch.no_grad():
            self.load_weights(checkpoint_tensors(model))

    def _after_reload(self) -> None:
        if on_cpu():
            self.llm.apply_model(repack_cpu_moe)
        self.llm.reset_prefix_cache()

    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        """log p(token_t | tokens_<t) for t >= 1 of each sequence, as the engine computes it."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        outs = self.llm.generate([TokensPrompt(prompt_token_ids=s) for s in sequences],
                                 SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False), use_tqdm=False)
        return [[o.prompt_logprobs[t][s[t]].logprob for t in range(1, len(s))] for s, o in zip(sequences, outs)]

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            self.llm = None
            del llm
            gc.collect()
