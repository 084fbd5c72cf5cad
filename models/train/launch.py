"""Training on several processes: the settings every training stage shares (`Processes`), the torchrun
command that starts them, and the worker side (`worker_main`).

Every stage launches the same way: `torchrun -m r1flow.models.train.<module> --spec SPEC.json`, one
process per GPU (gloo on CPU, NCCL on GPUs). Pretraining owns its process group (models/train/pretrain.py).
The TRL stages (SFT, reward model, GRPO) do not: under torchrun, transformers' `TrainingArguments`
hands the environment to accelerate, which initialises the process group, wraps the model in DDP or
FSDP2 and shards the data, exactly as under `accelerate launch` (which is torchrun plus a config file).
`trainer_kwargs` turns `parallel` into the TrainingArguments fields accelerate reads.

FSDP2 rather than DeepSpeed ZeRO-3: it is PyTorch's own, needs no compiled extension, runs on CPU with
gloo (so CI tests it), and pretraining already uses it; ZeRO-3's extra (optimizer offload to NVMe) is
not what these stages' sizes need (models/plan.py sizes them).

No Prefect here; the task side (tasks/torchrun.py `launch`) starts torchrun and owns its process group.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator


class Processes(BaseModel):
    """How many processes train a stage, and how they shard the model (fields shared by every training
    stage; torchrun's names)."""

    nproc: int = Field(1, ge=1, description="Training processes per node (one per GPU); >1 launches torchrun "
                                            "(gloo on CPU, NCCL on GPUs).")
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp", description="With several processes: ddp replicates the model; fsdp shards weights, gradients and "
                           "optimizer state over the processes (PyTorch FSDP2 `fully_shard`, one unit per decoder "
                           "layer), for models that do not fit one GPU.")
    nnodes: int = Field(1, ge=1, description="Nodes (torchrun --nnodes); every node runs the stage with its "
                                             "own node_rank.")
    node_rank: int = Field(0, ge=0, description="This node's rank (torchrun --node_rank).")
    rdzv_endpoint: str | None = Field(None, description="host:port of node 0 for nnodes > 1 (torchrun "
                                                        "--rdzv_endpoint, c10d rendezvous).")

    @model_validator(mode="after")
    def _check_nodes(self):
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"nnodes={self.nnodes} needs rdzv_endpoint (host:port of node 0)")
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank={self.node_rank} must be below nnodes={self.nnodes}")
        return self

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @property
    def launched(self) -> bool:
        """Whether the stage runs under torchrun (several processes) rather than in the task's process."""
        return self.world_size > 1

    def check_processes(self, stage: str) -> None:
        """A training function runs in the processes its settings name: one, or torchrun's (tasks/torchrun.py
        `launch` starts them). Called first by each, so a mismatch is this error, not a missing process group
        deep inside accelerate."""
        got = int(os.environ.get("WORLD_SIZE", "1"))
        if got != self.world_size:
            raise ValueError(f"{stage}: nproc x nnodes = {self.world_size} processes, but this runs in {got}; "
                             f"start it through tasks/torchrun.py `launch` (the stage does) or set nproc: 1")


class TrainerProcesses(Processes):
    """`Processes` plus the micro-batching of a TRL stage (SFT, reward model, GRPO)."""

    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Micro-batches per optimizer step (TrainingArguments' name): each process holds "
                             "batch / (nproc*nnodes*gradient_accumulation_steps) sequences in a forward at once; "
                             "the optimizer step and its batch stay the same.")

    def micro_batch(self, batch: int) -> int:
        """Sequences one process holds in a forward (TrainingArguments' per_device_train_batch_size)."""
        return batch // (self.world_size * self.gradient_accumulation_steps)


def global_batch_check(batch: int, p: TrainerProcesses, field: str = "batch_size") -> None:
    """A TRL stage's batch is global (samples per optimizer step, whatever the process count), so the
    same recipe trains the same way on 1 or N processes; each process takes an equal share, in
    gradient_accumulation_steps micro-batches."""
    parts = p.world_size * p.gradient_accumulation_steps
    if batch % parts:
        raise ValueError(f"{field}={batch} must divide by nproc*nnodes*gradient_accumulation_steps={parts} (each "
                         "process takes an equal share of the global batch, in equal micro-batches)")


def torchrun_command(p: Processes, module: str, spec: Path) -> list[str]:
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    if p.nnodes == 1:
        where = ["--standalone"]
    else:
        where = [f"--nnodes={p.nnodes}", f"--node_rank={p.node_rank}", "--rdzv_backend=c10d",
                 f"--rdzv_endpoint={p.rdzv_endpoint}"]
    return [torchrun, *where, f"--nproc_per_node={p.nproc}", "-m", module, "--spec", str(spec)]


def trainer_kwargs(p: Processes, gradient_checkpointing: bool) -> dict:
    """TrainingArguments fields for `p` (TRL's SFTConfig, RewardConfig and GRPOConfig inherit them).
    fsdp: FSDP2 with one unit per decoder layer (transformers' `_no_split_modules`). The resumable
    checkpoints are sharded (each process writes its own shard with torch.distributed.checkpoint): with
    FULL_STATE_DICT, transformers' checkpoint save aborted on CPU with a gloo collective mismatch. The
    stage's output is still an ordinary Hugging Face folder: checkpoint.py `save_trained` gathers the
    full state once at the end. Activation checkpointing goes through FSDP's own setting (transformers
    refuses `gradient_checkpointing` with FSDP)."""
    if p.parallel != "fsdp" or not p.launched:
        return {"gradient_checkpointing": gradient_checkpointing}
    _accelerate_fsdp_on_cpu()
    return {"fsdp": "full_shard", "gradient_checkpointing": False,
            "fsdp_config": {"version": 2, "state_dict_type": "SHARDED_STATE_DICT", "reshard_after_forward": True,
                            "activation_checkpointing": gradient_checkpointing}}


def _accelerate_fsdp_on_cpu() -> None:
    """accelerate 1.16 turns an FSDP plugin into DistributedType.FSDP only for accelerator devices:
    `AcceleratorState.__init__` lists MULTI_GPU, MULTI_XPU, ... but not MULTI_CPU, so on CPU (gloo) the
    plugin is dropped and the model silently trains under DDP. FSDP2's `fully_shard` itself runs on
    CPU (pretraining uses it there), so this wraps that one decision: once a state is built on CPU
    with a plugin, it is FSDP with that plugin, as on GPUs. Only the CPU path (tests, CPU-only
    nodes) is touched; with CUDA nothing is patched."""
    import torch
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    if torch.cuda.is_available() or getattr(AcceleratorState.__init__, "_r1flow_cpu_fsdp", False):
        return
    original = AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.fsdp_plugin = fsdp_plugin
        # Every later `AcceleratorState()` re-copies PartialState's type (MULTI_CPU) into the shared
        # state, so the decision is re-applied on each construction, not only the first.
        if getattr(self, "fsdp_plugin", None) is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP

    init._r1flow_cpu_fsdp = True
    AcceleratorState.__init__ = init


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def worker_main(run: Callable[[dict], dict], description: str) -> None:
    """The torchrun worker: read --spec (JSON; `summary` is where rank 0 writes the result), call
    `run(spec)` on every rank, and end the process group."""
    import torch
    import torch.distributed as dist

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--spec", required=True, help="JSON written by tasks/torchrun.py `launch`")
    spec = json.loads(Path(ap.parse_args().spec).read_text())
    if not torch.cuda.is_available():  # the node's cores, shared by its processes
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    from torch.distributed.elastic.multiprocessing.errors import record

    @record  # a failing rank's exception reaches torchrun's error report (and the task's error message)
    def work() -> None:
        summary = run(spec)
        if rank() == 0:
            Path(spec["summary"]).write_text(json.dumps(summary))
        if dist.is_initialized():
            dist.destroy_process_group()

    work()
