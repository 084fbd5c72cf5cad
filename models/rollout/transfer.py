"""Weight sync to vLLM servers without shared storage: the trainer side of vLLM's weight-transfer API.

vLLM's servers (`VLLM_SERVER_DEV_MODE=1`) expose `/init_weight_transfer_engine`, `/start_weight_update`,
`/update_weights` and `/finish_weight_update`; the server side is the `WeightTransferEngine` named by the
server's `--weight-transfer-config {"backend": ...}`. `WeightBroadcaster` puts the trainer (rank 0) and every
worker of every server in one process group and broadcasts each tensor of `checkpoint_tensors(model)` (LoRA
merged, FSDP gathered) to all of them at once; each worker loads it with `model.load_weights` inside vLLM's
layerwise reload. Nothing is written to disk, so the servers need not share storage with the trainer.

Backends:
- `nccl` (GPUs): vLLM's own `NCCLWeightTransferEngine` on the servers, unchanged (not packed, so one
  broadcast per tensor), and vLLM's `PyNcclCommunicator` here. Not run in this repository: no GPU.
- `gloo` (CPU; what the tests run): `GlooGroup` below on both sides, and r1flow's server engine
  (models/rollout/server_ext.py: vLLM ships no CPU backend).

`WeightBroadcaster` is r1flow's, not vLLM's `NCCLTrainerWeightTransferEngine`: that one drives a single server
(it gives every worker rank offset 1), and a fleet needs one group over all servers, each at its own rank
offset, so one broadcast reaches every server: one sync per step. This module imports vLLM only for `nccl`:
importing vLLM costs a trainer process seconds.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import timedelta
from urllib.parse import urlparse

from r1flow.models.rollout.fleet import EXTENSION, free_port

import torch

BACKENDS = ("gloo", "nccl")
CHUNK_BYTES = 256 * 2**20  # gloo: tensors per broadcast, packed up to this size


class GlooGroup:
    """The two calls vLLM's weight-transfer code makes on its `PyNcclCommunicator` (`broadcast`, `destroy`), over
    a gloo process group of its own (torch.distributed's default group is left alone): rank 0 hosts the
    rendezvous store. Plain torch, so the trainer does not import vLLM for it."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, timeout_s: float):
        timeout = timedelta(seconds=timeout_s)
        self.store = torch.distributed.TCPStore(host, port, world_size, rank == 0, timeout=timeout)
        self.pg = torch.distributed.ProcessGroupGloo(torch.distributed.PrefixStore("r1flow-weights", self.store),
                                                     rank, world_size, timeout)

    def broadcast(self, tensor: torch.Tensor, src: int = 0, stream=None) -> None:
        opts = torch.distributed.BroadcastOptions()
        opts.rootRank, opts.rootTensor = src, 0
        self.pg.broadcast([tensor], opts).wait()

    def destroy(self) -> None:
        self.pg = self.store = None


@dataclass
class UpdateInfo:
    """One round's parameters in broadcast order: the fields of vLLM's `NCCLWeightTransferUpdateInfo`, plus
    gloo's `chunk_bytes` (0: one broadcast per tensor, as vLLM's NCCL engine when not packed)."""
    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]
    chunk_bytes: int = 0

    def chunks(self) -> list[tuple[list[int], list[int], int]]:
        """(tensor indices, their byte offsets, total bytes) per broadcast: tensors packed in order into buffers
        of at most `chunk_bytes` (a larger tensor alone), each starting on a 64-byte boundary so every slice
        can be viewed as its dtype. Both sides compute it from the same info."""
        sizes = [torch.Size(s).numel() * torch.empty((), dtype=getattr(torch, d)).element_size()
                 for d, s in zip(self.dtype_names, self.shapes)]
        if not self.chunk_bytes:
            return [([i], [0], n) for i, n in enumerate(sizes)]
        out, idx, offs, end = [], [], [], 0
        for i, n in enumerate(sizes):
            start = -(-end // 64) * 64
            if idx and start + n > self.chunk_bytes:
                out.append((idx, offs, end))
                idx, offs, start = [], [], 0
            idx.append(i)
            offs.append(start)
            end = start + n
        if idx:
            out.append((idx, offs, end))
        return out


def address_towards(url: str) -> str:
    """This host's address on the route to `url`'s host: where the servers can reach the group's store."""
    host = urlparse(url).hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))  # UDP: no packet is sent, the kernel only picks the route
        return s.getsockname()[0]


class WeightBroadcaster:
    """Trainer side: one process group over the trainer (rank 0) and every worker of every server (`urls`),
    opened at construction; `send(tensors)` is one update round on all servers. `post(url, path, body)` is the
    fleet's HTTP call. Only the first training process constructs this."""

    def __init__(self, urls: list[str], post, get, backend: str, timeout_s: float = 600.0):
        if backend not in BACKENDS:
            raise ValueError(f"engine.weight_transfer: unknown backend {backend!r}; one of {BACKENDS} or 'disk'")
        self.urls, self.post, self.backend = urls, post, backend
        self.group = None
        sizes = [int(get(u, "/get_world_size")["world_size"]) for u in urls]
        offsets = [1 + sum(sizes[:i]) for i in range(len(urls))]
        world = 1 + sum(sizes)
        host = address_towards(urls[0])
        port = free_port(host)
        infos = [{"master_address": host, "master_port": port, "rank_offset": off, "world_size": world}
                 for off in offsets]
        if backend == "gloo":
            infos = [i | {"timeout_s": timeout_s} for i in infos]
        else:  # vLLM's NCCL worker engine; not packed, so it expects one broadcast per tensor like gloo
            infos = [i | {"packed": False} for i in infos]
        t0 = time.perf_counter()
        # Every worker blocks in the rendezvous until the trainer joins: ask them all, then join.
        pool = ThreadPoolExecutor(max_workers=len(urls) + 1)
        try:
            futs = [pool.submit(post, u, "/init_weight_transfer_engine", {"init_info": info})
                    for u, info in zip(urls, infos)]
            opened = pool.submit(self._open, host, port, world, timeout_s)
            # A server that refuses (no backend configured) answers at once, while the group would wait for it
            # until the timeout: report the first failure, whichever side it is on.
            wait([*futs, opened], return_when=FIRST_EXCEPTION)
            for u, f in zip(urls, futs):
                if f.done() and f.exception():
                    raise RuntimeError(
                        f"vLLM server {u} could not join the {backend} weight transfer: {str(f.exception()).rstrip('.')}. A server "
                        f"started by hand needs --weight-transfer-config '{{\"backend\": \"{backend}\"}}' and "
                        f"--worker-extension-cls {EXTENSION} (or set engine.weight_transfer: disk)")
            self.group = opened.result()
            for f in futs:
                f.result()
        finally:
            pool.shutdown(wait=False)  # after a failure a server may still wait in the rendezvous: do not join it
        self.init_s = time.perf_counter() - t0

    def _open(self, host: str, port: int, world: int, timeout_s: float):
        if self.backend == "gloo":
            return GlooGroup(host, port, 0, world, timeout_s)
        from vllm.distributed.weight_transfer.nccl_common import stateless_init_process_group

        return stateless_init_process_group(host, port, 0, world, torch.accelerator.current_device_index())

    def send(self, tensors: dict[str, torch.Tensor]) -> None:
        """One update round on every server. gloo packs the tensors into a few large buffers: one broadcast
        and one `load_weights` per tensor made the sync slower than writing a checkpoint (bench/grpo_step.py
        --fleet). NCCL sends tensor by tensor (vLLM's NCCL engine, not packed); on GPUs that is cheap."""
        names = list(tensors)
        info = UpdateInfo(names=names, dtype_names=[str(tensors[n].dtype).split(".")[-1] for n in names],
                          shapes=[list(tensors[n].shape) for n in names],
                          chunk_bytes=CHUNK_BYTES if self.backend == "gloo" else 0)
        payload = asdict(info)
        if self.backend == "nccl":
            del payload["chunk_bytes"]  # vLLM's NCCLWeightTransferUpdateInfo has no such field
        pool = ThreadPoolExecutor(max_workers=len(self.urls))
        try:
            list(pool.map(lambda u: self.post(u, "/start_weight_update", {}), self.urls))
            # Each server's /update_weights receives and loads every tensor, so it runs beside the broadcasts.
            futs = [pool.submit(self.post, u, "/update_weights", {"update_info": payload}) for u in self.urls]
            stream = torch.cuda.current_stream() if self.backend == "nccl" else None
            for idx, offs, nbytes in info.chunks():
                if failed := [f for f in futs if f.done() and f.exception()]:
                    failed[0].result()  # a server refused the update: say so rather than wait in a broadcast
                if not info.chunk_bytes:
                    t = tensors[names[idx[0]]]
                    self.group.broadcast(t if t.is_contiguous() else t.contiguous(), src=0, stream=stream)
                    continue
                buf = torch.empty(nbytes, dtype=torch.uint8)
                for i, off in zip(idx, offs):
                    flat = tensors[names[i]].detach().contiguous().view(-1).view(torch.uint8)
                    buf[off:off + flat.numel()].copy_(flat)
                self.group.broadcast(buf, src=0)
            for f in futs:
                f.result()
            list(pool.map(lambda u: self.post(u, "/finish_weight_update", {}), self.urls))
            if stream is not None:
                stream.synchronize()
        finally:
            pool.shutdown(wait=False)  # a server stuck in a broadcast after a failure must not hang the trainer

    def close(self) -> None:
        """Release the group on both sides (servers someone else runs outlive the stage); best effort."""
        for url in self.urls:
            try:
                self.post(url, "/shutdown_weight_transfer_engine", {})
            except Exception as e:  # a server that is already gone holds no group
                print(f"weight transfer: {url} did not release its group: {e}", flush=True)
        if self.group is not None:
            self.group.destroy()
            self.group = None
