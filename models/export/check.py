"""The check every GGUF export passes: llama.cpp (through the llama-cpp-python bindings) loads the file,
tokenizes held-out prompts exactly as transformers does, agrees with transformers on next-token
log-probs within a bound per file type, and decodes the same greedy completions.

What is compared, per prompt (the held-out problems as evaluation asks them):
- tokens: `llama_tokenize(text, add_special=True, parse_special=True)` against the tokenizer's
  `tokenizer(text)`, i.e. what each runtime feeds the model for the same text;
- log-probs: the prompt plus transformers' greedy continuation, teacher-forced through both; at every
  position, every token transformers gives log-prob >= -10 (the tokens that carry the mass);
  for the unquantized types the largest absolute difference must be within the type's bound; for the
  quantized ones the mean must (their largest difference is a rare token whose rounding flips a
  near-tied MoE routing choice: 5.5 nats on the tiny R1 in q4_k_m, mean 0.11). llama.cpp runs with an f32 KV
  cache, so the figure measures the file, not the cache (its default f16 cache adds about 1e-2);
- greedy: for the first `greedy` prompts, llama.cpp's own argmax decoding from the prompt, token for
  token against transformers' `generate(do_sample=False)`. Required for the unquantized types;
  reported for the quantized ones, whose rounding legitimately changes some argmaxes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from r1flow.models.export.gguf import ExportError, llama_cpp

# Largest |log-prob difference| each unquantized file type may show (nats). f32 is the converter alone
# (measured 1.5e-5 on the tiny models); f16 and bf16 add their rounding of the weights (tiny R1 f16: 6.5e-3).
BOUNDS = {"f32": 1e-3, "f16": 5e-2, "bf16": 2e-1}
# Mean |log-prob difference| the quantized types may show (nats). Measured on the tiny run (2026-12-05):
# q8_0 0.021 (R1) and 0.022 (llama_m_distill); q4_k_m 0.108 and 0.064.
MEAN_BOUNDS = {"q8_0": 0.1}
QUANT_MEAN_BOUND = 0.5  # k-quants and the 4/5-bit types
UNQUANTIZED = ("f32", "f16", "bf16")
MASS = -10.0


def bound_for(gguf_type: str) -> tuple[str, float]:
    """Which statistic of |log-prob difference| is bounded for `gguf_type` ("max" or "mean"), and the bound."""
    if gguf_type in BOUNDS:
        return "max", BOUNDS[gguf_type]
    return "mean", MEAN_BOUNDS.get(gguf_type, QUANT_MEAN_BOUND)


def _hf(ckpt: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    return tok, model


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def check_gguf(gguf: Path, gguf_type: str, ckpt: Path, prompts: list[str], greedy: int = 4,
               max_new_tokens: int = 48, hf=None) -> dict:
    """Run the check on one GGUF file; returns its numbers, raises ExportError with them on failure.
    `hf`: (tokenizer, model) already loaded from `ckpt`, to share across files."""
    import torch

    if not prompts:
        raise ExportError("the GGUF check needs at least one prompt")
    lc = llama_cpp()
    tok, model = hf or _hf(ckpt)
    eos = tok.eos_token_id
    # Teacher-forced sequences: each prompt with transformers' greedy continuation.
    seqs, hf_greedy, hf_ids = [], [], []
    with torch.no_grad():
        for text in prompts:
            ids = tok(text)["input_ids"]
            hf_ids.append(ids)
            gen = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos,
                                 pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos)
            cont = gen[0, len(ids):].tolist()
            if eos in cont:
                cont = cont[:cont.index(eos) + 1]
            hf_greedy.append(cont)
            seqs.append(ids + cont)
    n_ctx = max(len(s) for s in seqs) + max_new_tokens + 8
    llm = lc.Llama(model_path=str(gguf), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                   verbose=False, seed=0, n_threads=max(1, torch.get_num_threads()),
                   type_k=lc.GGML_TYPE_F32, type_v=lc.GGML_TYPE_F32)
    try:
        token_ok = sum(llm.tokenize(t.encode(), add_bos=True, special=True) == ids for t, ids in zip(prompts, hf_ids))
        worst, total, count = 0.0, 0.0, 0
        with torch.no_grad():
            for s in seqs:
                llm.reset()
                llm.eval(s)
                ll = _log_softmax(np.asarray(llm.scores[:len(s)]))
                ref = torch.log_softmax(model(torch.tensor([s])).logits[0].double(), -1).numpy()
                mask = ref >= MASS
                diff = np.abs(ll[:, :ref.shape[1]] - ref)[mask]
                worst, total, count = max(worst, float(diff.max())), total + float(diff.sum()), count + diff.size
        greedy_ok, examples = 0, []
        for ids, want in list(zip(hf_ids, hf_greedy))[:greedy]:
            got = _greedy(llm, ids, max_new_tokens, eos)
            greedy_ok += got == want
            if len(examples) < 2:
                examples.append({"prompt_tail": tok.decode(ids[-12:]), "transformers": tok.decode(want),
                                 "llama.cpp": tok.decode(got)})
    finally:
        llm.close()
    bound_on, bound = bound_for(gguf_type)
    mean = total / max(count, 1)
    n_greedy = min(greedy, len(prompts))
    res = {"file": gguf.name, "type": gguf_type, "bytes": gguf.stat().st_size,
           "tokens_equal": token_ok, "prompts": len(prompts),
           "max_abs_logprob_diff": worst, "mean_abs_logprob_diff": mean, "bound": bound, "bound_on": bound_on,
           "greedy_equal": greedy_ok, "greedy_prompts": n_greedy, "greedy_required": gguf_type in UNQUANTIZED,
           "examples": examples}
    failures = []
    if token_ok != len(prompts):
        failures.append(f"llama.cpp tokenized {len(prompts) - token_ok} of {len(prompts)} prompts differently")
    if not math.isfinite(worst) or (bound_on == "max" and worst > bound):
        failures.append(f"log-probs differ by up to {worst:.3g} nats (bound {bound:g} for {gguf_type})")
    elif bound_on == "mean" and mean > bound:
        failures.append(f"log-probs differ by {mean:.3g} nats on average (bound {bound:g} for {gguf_type})")
    if res["greedy_required"] and greedy_ok != n_greedy:
        failures.append(f"greedy completions differ on {n_greedy - greedy_ok} of {n_greedy} prompts")
    res["passed"] = not failures
    if failures:
        raise ExportError(f"llama.cpp check of {gguf.name} failed: " + "; ".join(failures)
                          + f" (tokens {token_ok}/{len(prompts)}, max |dlogp| {worst:.3g}, mean {mean:.3g}, greedy "
                          f"{greedy_ok}/{n_greedy})")
    return res


def _greedy(llm, ids: list[int], max_new_tokens: int, eos: int) -> list[int]:
    """llama.cpp's argmax decoding from `ids`, stopping after EOS."""
    llm.reset()
    llm.eval(ids)
    out: list[int] = []
    for _ in range(max_new_tokens):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        if nxt == eos:
            break
        llm.eval([nxt])
    return out
