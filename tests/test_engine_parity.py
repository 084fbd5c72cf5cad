"""vLLM vs transformers on the same DeepSeek-V3-style checkpoint, and the CPU RoPE root cause.
    pytest tests/test_engine_parity.py"""

from __future__ import annotations

import json

import pytest
import torch

from r1flow.models.arch.deepseek_v3.config import MoEModelConfig
from r1flow.models.rollout.engine import EngineConfig, VLLMEngine


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A DeepseekV3ForCausalLM with the shape the recipes use and non-trivial routing: random router
    weights and correction biases, so expert choice and RoPE both matter."""
    from transformers import AutoModelForCausalLM
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    d = tmp_path_factory.mktemp("ckpt")
    vocab = [f"t{i}" for i in range(300)] + ["<|pad|>", "<|bos|>", "<|eos|>"]
    tk = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="t0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|eos|>")
    tok.save_pretrained(d)
    m = MoEModelConfig(hidden_size=128, num_hidden_layers=3, num_attention_heads=4, n_routed_experts=8, n_group=2,
                       topk_group=1, max_position_embeddings=256)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(m.to_hf(len(vocab), 301, 302, 300), dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gate.weight" in name:
                p.normal_(0, 0.3)
        for name, b in model.named_buffers():
            if "e_score_correction_bias" in name:
                b.normal_(0, 0.05)
    model.save_pretrained(d)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["scoring_func"] == "sigmoid" and cfg["topk_method"] == "noaux_tc" and cfg["kv_lora_rank"] == 512
    return d, model.eval()


@pytest.mark.slow
def test_vllm_logprobs_match_transformers(checkpoint):
    path, model = checkpoint
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 300, (n,), generator=g).tolist() for n in (8, 40, 97, 160)]
    with torch.no_grad():
        ref = [torch.log_softmax(model(torch.tensor([s])).logits[0].float(), -1)[torch.arange(len(s) - 1),
                                                                                  torch.tensor(s[1:])] for s in seqs]
    engine = VLLMEngine(str(path), EngineConfig(kv_cache_gib=0.25, max_model_len=256))
    try:
        got = engine.prompt_logprobs(seqs)
    finally:
        engine.close()
    gap = max((r - torch.tensor(v)).abs().max().item() for r, v in zip(ref, got))
    assert gap <= 1e-3, f"max |logprob gap| {gap:.2e} between vLLM and transformers"


def test_vllm_cpu_rope_kernel_mishandles_strided_query():
    """Why engine.py disables vLLM's `rotary_embedding` custom op on CPU. If this starts failing, vLLM
    fixed its kernel and the override in models/rollout/engine.py can go."""
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.rotary_embedding import get_rope

    if torch.cuda.is_available():
        pytest.skip("CPU kernel only")
    with set_current_vllm_config(VllmConfig()):
        rope = get_rope(64, max_position=256, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                        is_neox_style=False, dtype=torch.float32)
    t, h, nope = 12, 4, 32
    full = torch.randn(t, h, nope + 64)
    k = torch.randn(t, 1, 64)
    pos = torch.arange(t)
    want, _ = rope.forward_native(pos, full[..., nope:].contiguous().clone(), k.clone())
    native, _ = rope.forward_native(pos, full.clone()[..., nope:], k.clone())  # what r1flow makes vLLM use
    assert (native.view(t, h, 64) - want.view(t, h, 64)).abs().max() < 1e-6
    strided = full.clone()
    rope.forward_cpu(pos, strided[..., nope:], k.clone())  # in place, as MLA calls it
    assert (strided[..., nope:] - want.view(t, h, 64)).abs().max() > 1e-2


@pytest.mark.slow
def test_dense_model_serves_seeded_batches_over_the_token_budget(tmp_path):
    """vLLM on CPU keeps chunked prefill on for non-MLA models, and a split prompt's seeded generator
    is then rewound with an offset a CPU generator does not have ("CPU Generator does not use
    offset"). VLLMEngine turns chunked prefill off on CPU (models/rollout/engine.py)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from r1flow.models.arch.dense import FLAVORS
    from r1flow.models.rollout.engine import SamplingConfig
    from r1flow.models.rollout.fleet import make_engine

    vocab = [f"t{i}" for i in range(300)] + ["<|pad|>", "<|bos|>", "<|eos|>"]
    tk = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="t0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|eos|>",
                                  unk_token="t0")
    tok.save_pretrained(tmp_path)
    shape = FLAVORS["debug"].model_copy(update={"num_attention_heads": 2, "num_key_value_heads": 1})  # head_dim 32
    cfg = shape.to_hf(len(vocab), 301, 302, 300)  # Llama-style
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(tmp_path)
    engine = make_engine(str(tmp_path), EngineConfig(kv_cache_gib=0.25, max_model_len=256))
    try:
        assert engine.llm.llm_engine.vllm_config.scheduler_config.enable_chunked_prefill is False
        prompts = [" ".join(f"t{(i * 7 + j) % 300}" for j in range(200)) for i in range(64)]  # 12,800 tokens
        out = engine.generate(prompts, SamplingConfig(n=4, max_tokens=8, temperature=1.0))
    finally:
        engine.close()
    assert len(out) == 64 and all(len(c) == 4 for c in out)
