"""What r1flow adds to every vLLM server it updates; vLLM imports this module in each server worker, before the
model loads, because the server runs with `--worker-extension-cls r1flow.models.rollout.server_ext.
WeightSyncExtension` (models/rollout/fleet.py starts them so; a server started by hand needs the flag).

- `WeightSyncExtension.r1flow_update_weights`: load a checkpoint directory (`/collective_rpc`), then re-run the
  CPU experts' prepack that vLLM skips on a reload (see `VLLMEngine.update_weights`).
- `GlooWeightTransferEngine`, registered here as vLLM weight-transfer backend `gloo`: the server side of the
  broadcast sync (models/rollout/transfer.py) on CPU. vLLM ships no CPU backend (its NCCL engine needs CUDA
  streams and `torch.accelerator`), so this is the smallest engine over vLLM's base class: receive each tensor
  by broadcast and load it inside vLLM's layerwise reload, as vLLM's NCCL engine does when not packed, then
  the same CPU prepack. On GPUs the servers use vLLM's own `nccl` engine unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from vllm.distributed.weight_transfer.base import WeightTransferEngine, WeightTransferInitInfo
from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

from r1flow.models.rollout.engine import on_cpu, repack_cpu_moe
from r1flow.models.rollout.transfer import GlooGroup, UpdateInfo


class WeightSyncExtension:
    """Mixed into vLLM's worker class by `--worker-extension-cls`; reached by `/collective_rpc`. Importing it
    (vLLM does, in every worker, before the model loads) also registers the `gloo` backend below."""

    def r1flow_update_weights(self, weights_path: str) -> int:
        self.reload_weights(weights_path=weights_path)  # vLLM Worker.reload_weights
        return self.apply_model(repack_cpu_moe) if on_cpu() else 0


@dataclass(kw_only=True)
class GlooInitInfo(WeightTransferInitInfo):
    master_address: str
    master_port: int
    rank_offset: int
    world_size: int
    timeout_s: float = 600.0


class GlooWeightTransferEngine(WeightTransferEngine[GlooInitInfo, UpdateInfo]):
    """Server side of the `gloo` backend: receive each tensor by broadcast and load it, as vLLM's NCCL engine
    does when not packed."""

    init_info_cls = GlooInitInfo
    update_info_cls = UpdateInfo

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.group: GlooGroup | None = None

    def init_transfer_engine(self, init_info: GlooInitInfo) -> None:
        self.shutdown()  # a server outlives a stage: the next stage's trainer opens a new group
        p = self.parallel_config
        rank = init_info.rank_offset + p.data_parallel_index * p.world_size + p.rank
        self.group = GlooGroup(init_info.master_address, init_info.master_port, rank, init_info.world_size,
                               init_info.timeout_s)

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def update_weights(self, update_info: dict) -> None:
        # The base class then synchronises `torch.accelerator`, which raises where there is none (CPU);
        # gloo's broadcast has returned by then anyway.
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: UpdateInfo) -> None:
        if self.group is None:
            raise RuntimeError("gloo weight transfer not initialised: call /init_weight_transfer_engine first")
        from vllm.model_executor.model_loader.mtp_validation import disable_mtp_completeness_check

        info = update_info
        with disable_mtp_completeness_check():
            for idx, offs, nbytes in info.chunks():  # the trainer's packing (transfer.py: UpdateInfo.chunks)
                buf = torch.empty(nbytes, dtype=torch.uint8)  # gloo moves host memory; load_weights copies to the device
                self.group.broadcast(buf, src=0)
                weights = []
                for i, off in zip(idx, offs):
                    dtype, shape = getattr(torch, info.dtype_names[i]), info.shapes[i]
                    n = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
                    weights.append((info.names[i], buf[off:off + n].view(dtype).view(shape)))
                self.model.load_weights(weights)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)
        if on_cpu():
            repack_cpu_moe(self.model)

    def shutdown(self) -> None:
        if self.group is not None:
            self.group.destroy()
            self.group = None


if "gloo" not in WeightTransferEngineFactory._registry:  # the factory refuses a second registration
    WeightTransferEngineFactory.register_engine("gloo", GlooWeightTransferEngine)


if "gloo" not in WeightTransferEngineFactory._registry:  # the factory refuses a second registration
    WeightTransferEngineFactory.register_engine("gloo", GlooWeightTransferEngine)
