"""The fleet's weight broadcast (models/rollout/transfer.py, models/rollout/server_ext.py) without servers:
the trainer side and r1flow's gloo server engine in one process, joined over a real gloo group, with
vLLM's HTTP routes replaced by direct calls. tests/test_fleet.py runs the same against vLLM servers.
    pytest tests/test_transfer.py"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from r1flow.models.rollout import transfer
from r1flow.models.rollout.transfer import UpdateInfo, WeightBroadcaster


def test_tensors_are_packed_in_order_on_aligned_offsets():
    info = UpdateInfo(names=list("abcd"), dtype_names=["float32", "bfloat16", "float32", "float32"],
                      shapes=[[3], [5], [100], [2, 2]], chunk_bytes=400)
    # a (12 B) and b (10 B, at 64) share a buffer; c (400 B) does not fit after them and fills its own
    assert info.chunks() == [([0, 1], [0, 64], 74), ([2], [0], 400), ([3], [0], 16)]
    info.chunk_bytes = 0  # NCCL: one broadcast per tensor
    assert [c[0] for c in info.chunks()] == [[0], [1], [2], [3]]


class Receiver:
    """What a vLLM server does with the routes `WeightBroadcaster` posts to, for one gloo server engine."""

    def __init__(self):
        from r1flow.models.rollout.server_ext import GlooWeightTransferEngine

        self.loaded: dict[str, torch.Tensor] = {}
        self.calls: list[str] = []
        engine = object.__new__(GlooWeightTransferEngine)  # no vLLM config: only what the transfer touches
        engine.group, engine.device = None, torch.device("cpu")
        engine.parallel_config = SimpleNamespace(data_parallel_index=0, world_size=1, rank=0)
        engine.model = SimpleNamespace(load_weights=lambda ws: self.loaded.update({n: w.clone() for n, w in ws}))
        self.engine = engine

    def post(self, url, path, body):
        self.calls.append(path)
        if path == "/init_weight_transfer_engine":
            self.engine.init_transfer_engine(self.engine.parse_init_info(body["init_info"]))
        elif path == "/update_weights":
            self.engine.update_weights(body["update_info"])
        elif path == "/shutdown_weight_transfer_engine":
            self.engine.shutdown()
        return {}


def test_weights_arrive_bit_for_bit_in_packed_broadcasts(monkeypatch):
    monkeypatch.setattr(transfer, "CHUNK_BYTES", 4096)  # several buffers, one tensor larger than a buffer
    g = torch.Generator().manual_seed(0)
    tensors = {"embed.weight": torch.randn(64, 8, generator=g), "layers.0.norm": torch.randn(7, generator=g),
               "layers.0.proj": torch.randn(40, 40, generator=g).to(torch.bfloat16),
               "layers.0.proj.bias": torch.randn(3, generator=g), "lm_head.weight": torch.randn(8, 64, generator=g).t()}
    rx = Receiver()
    tx = WeightBroadcaster(["http://127.0.0.1:1"], rx.post, lambda url, path: {"world_size": 1}, "gloo", timeout_s=60)
    try:
        for step in range(2):
            sent = {k: v + step for k, v in tensors.items()}
            tx.send(sent)
            assert rx.loaded.keys() == sent.keys()
            for k, v in sent.items():
                assert rx.loaded[k].dtype == v.dtype and torch.equal(rx.loaded[k], v), k
        assert rx.calls.count("/update_weights") == 2
        assert len(UpdateInfo(list(tensors), [str(v.dtype)[6:] for v in tensors.values()],
                              [list(v.shape) for v in tensors.values()], 4096).chunks()) > 2
    finally:
        tx.close()
    assert rx.engine.group is None and "/shutdown_weight_transfer_engine" in rx.calls


def test_a_server_without_the_transfer_backend_is_a_clear_error():
    def refuse(url, path, body):  # what a server started without --weight-transfer-config answers
        raise RuntimeError(f"vLLM server {url}{path} answered 500: Weight transfer not configured.")

    with pytest.raises(RuntimeError, match=r"(?s)127.0.0.1:9.*--weight-transfer-config.*server_ext.WeightSync"):
        WeightBroadcaster(["http://127.0.0.1:9"], refuse, lambda url, path: {"world_size": 1}, "gloo", timeout_s=3)
    with pytest.raises(ValueError, match="engine.weight_transfer"):
        WeightBroadcaster(["http://127.0.0.1:9"], refuse, lambda url, path: {"world_size": 1}, "tcp")
