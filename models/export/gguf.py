"""Hugging Face checkpoint -> GGUF with llama.cpp's own converter, and GGUF -> quantized GGUF with
llama.cpp's own quantizer. Nothing here re-implements either: both come from the pinned
llama-cpp-python release (its source distribution ships llama.cpp, `convert_hf_to_gguf.py` and the
`gguf-py` that converter needs; the PyPI `gguf` package is older and lacks `LazyChunkedTensor`).

Two things keep the stock converter from exporting r1flow's checkpoints, and each is wrapped at its
smallest piece:

- It recognises a BPE pre-tokenizer only by hashing the tokens of a fixed text, i.e. only for
  vocabularies it has seen; every retrained tokenizer fails ("BPE pre-tokenizer was not recognized").
  `pre_tokenizer()` reads the tokenizer's own definition (tokenizer.json) and names llama.cpp's
  equivalent; `_convert_main.py` uses that name only where the converter's hash lookup fails. A
  definition with no equivalent fails here, before any conversion, with the definition in the message.
- The chat template carries `{% generation %}` tags (TRL's assistant-only loss). Renderers outside
  transformers (llama-cpp-python's Jinja2 formatter, llama.cpp's own) reject the unknown tag, and the
  tags do not change what the template renders, so the copy staged for conversion drops them.

llama.cpp decides whether to add BOS from the GGUF's `add_bos_token`, which the converter takes from the
tokenizer files and otherwise defaults by pre-tokenizer type (`llama-bpe` adds one): the staged
tokenizer_config.json states what transformers actually adds, so the same text gives the same tokens.
Under transformers 4.x the converter's AutoTokenizer also fails on `tokenizer_class:
TokenizersBackend` (what transformers 5 writes); the staged copy names `PreTrainedTokenizerFast` there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# The llama.cpp everything here runs: the llama-cpp-python release `make` installs (pyproject `export`).
LLAMA_CPP_PYTHON = "0.3.36"
# Written directly by the converter; anything else is quantized from the f16 file by llama.cpp.
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
QUANT_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m",
               "q5_k_s", "q5_k_m", "q6_k", "iq4_nl", "iq4_xs")
GGUF_TYPES = CONVERTER_TYPES + QUANT_TYPES


class ExportError(RuntimeError):
    """An export that cannot be done or failed its check; the message says which and why."""


def converter_dir() -> Path:
    """The llama.cpp source tree holding convert_hf_to_gguf.py: $R1FLOW_LLAMA_CPP, or the copy `make`
    extracts from the pinned llama-cpp-python source distribution into the virtual environment."""
    env = os.environ.get("R1FLOW_LLAMA_CPP")
    d = Path(env) if env else Path(sys.prefix) / "share" / "r1flow" / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    if not (d / "convert_hf_to_gguf.py").is_file() or not (d / "gguf-py" / "gguf").is_dir():
        raise ExportError(
            f"llama.cpp's converter is not at {d} (convert_hf_to_gguf.py and gguf-py/ expected). `make` extracts "
            f"it from the llama-cpp-python=={LLAMA_CPP_PYTHON} source distribution; or set R1FLOW_LLAMA_CPP to a "
            f"llama.cpp checkout of the same version.")
    return d


def llama_cpp():
    """The llama-cpp-python bindings, checked to be the pinned version."""
    try:
        import llama_cpp
    except ImportError as e:
        raise ExportError(f"GGUF export needs llama-cpp-python=={LLAMA_CPP_PYTHON} (pip install "
                          f"'r1flow[export]'; `make` installs it): {e}") from e
    if llama_cpp.__version__ != LLAMA_CPP_PYTHON:
        raise ExportError(f"llama-cpp-python {llama_cpp.__version__} is installed; r1flow's export is pinned to "
                          f"{LLAMA_CPP_PYTHON} (its converter and runtime must be the same llama.cpp)")
    return llama_cpp


# ---- the pre-tokenizer, from the tokenizer's own definition --------------------------------------------------
GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
# The regexes of the tokenizer.json files llama.cpp's pre-tokenizer types were made from (llama-vocab.cpp
# quotes each as "original regex from tokenizer.json").
SPLIT_RE = {
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
             r"|\s+(?!\S)|\s+",
    "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+",
}


def _byte_level(p: dict, regex: bool) -> bool:
    return p.get("type") == "ByteLevel" and not p.get("add_prefix_space", False) and p.get("use_regex", True) == regex


def pre_tokenizer(tokenizer_json: dict) -> str:
    """llama.cpp's name for a byte-level BPE tokenizer's pre-tokenization (`tokenizer.ggml.pre`), read from
    its tokenizer.json: `starcoder` (digits one by one, then GPT-2's regex; r1flow's tokenizer), `gpt-2`,
    `qwen2` or `llama-bpe`. Raises ExportError naming the definition when llama.cpp has no equivalent.

    llama.cpp normalizes nothing, so a normalizer rules the mapping out, with one exception: Qwen2's NFC,
    which llama.cpp's `qwen2` type leaves out for the hub's Qwen2 tokenizers too (text already in NFC, as
    every held-out prompt the check uses, tokenizes the same). transformers 5 gives every `qwen2` checkpoint
    that pipeline (Qwen2Tokenizer), whatever its tokenizer.json says."""
    model, pre, norm = tokenizer_json.get("model", {}), tokenizer_json.get("pre_tokenizer") or {}, \
        tokenizer_json.get("normalizer")
    seq = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    name = None
    if model.get("type") == "BPE":
        if len(seq) == 1 and _byte_level(seq[0], regex=True):
            name = "gpt-2"
        elif (len(seq) == 2 and seq[0].get("type") == "Digits" and seq[0].get("individual_digits")
              and _byte_level(seq[1], regex=True)):
            name = "starcoder"
        elif (len(seq) == 2 and seq[0].get("type") == "Split" and seq[0].get("behavior") == "Isolated"
              and not seq[0].get("invert") and _byte_level(seq[1], regex=False)):
            pattern = seq[0].get("pattern", {}).get("Regex")
            name = next((n for n, r in SPLIT_RE.items() if r == pattern), None)
    if norm is not None and not (name == "qwen2" and norm == {"type": "NFC"}):
        name = None
    if name is None:
        raise ExportError(
            "GGUF export: llama.cpp has no pre-tokenizer equivalent to this tokenizer's (model "
            f"{model.get('type')!r}, normalizer {json.dumps(norm)}, pre_tokenizer {json.dumps(pre)}); known: "
            "byte-level BPE with GPT-2's regex, digits split then GPT-2's regex (starcoder), or Qwen2's / "
            "Llama 3's split regex, without a normalizer. A tokenizer llama.cpp already knows by its vocabulary "
            "hash needs no mapping.")
    return name


# ---- conversion ---------------------------------------------------------------------------------------------
GENERATION_TAGS = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")
WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json", ".bin")


def stage_checkpoint(ckpt: Path, dst: Path) -> Path:
    """A view of `ckpt` for the converter: weights linked, configs copied, the chat template without
    `{% generation %}` tags, whether BOS/EOS are added stated as transformers adds them, and
    (transformers 4.x) a tokenizer class it can load."""
    import transformers

    shutil.rmtree(dst, ignore_errors=True)  # a view left by an interrupted attempt (the work dir outlives it)
    dst.mkdir(parents=True)
    for f in sorted(ckpt.iterdir()):
        if f.is_file() and f.name != "manifest.json":
            target = dst / f.name
            if f.name.endswith(WEIGHT_SUFFIXES):
                target.symlink_to(f.resolve())
            else:
                shutil.copyfile(f, target)
    if (tpl := dst / "chat_template.jinja").is_file():
        tpl.write_text(GENERATION_TAGS.sub("", tpl.read_text()))
    cfg_path = dst / "tokenizer_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        # What transformers adds around a text, stated for llama.cpp, whose own default depends on the
        # pre-tokenizer type (llama-bpe adds BOS): the same text must give the same tokens in both.
        tok = transformers.AutoTokenizer.from_pretrained(ckpt)
        ids = tok("a")["input_ids"]
        cfg["add_bos_token"] = tok.bos_token_id is not None and ids[0] == tok.bos_token_id
        cfg["add_eos_token"] = tok.eos_token_id is not None and ids[-1] == tok.eos_token_id
        if isinstance(cfg.get("chat_template"), str):
            cfg["chat_template"] = GENERATION_TAGS.sub("", cfg["chat_template"])
        if int(transformers.__version__.split(".")[0]) < 5 and cfg.get("tokenizer_class") == "TokenizersBackend":
            cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg_path.write_text(json.dumps(cfg, indent=2))
    return dst


def convert(ckpt: Path, out: Path, outtype: str, work: Path, log=print) -> Path:
    """Write `ckpt` (a Hugging Face checkpoint directory) as GGUF file `out` of type `outtype`
    (f32, f16, bf16, q8_0) with llama.cpp's converter, in a subprocess."""
    if outtype not in CONVERTER_TYPES:
        raise ExportError(f"the converter writes {', '.join(CONVERTER_TYPES)}; {outtype!r} is quantized from f16")
    tok_file = ckpt / "tokenizer.json"
    if not tok_file.is_file():
        raise ExportError(f"GGUF export of {ckpt}: no tokenizer.json (r1flow exports fast BPE tokenizers)")
    pre = pre_tokenizer(json.loads(tok_file.read_text()))
    conv = converter_dir()
    staged = stage_checkpoint(ckpt, work / "staged")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "r1flow.models.export._convert_main", str(conv), pre, str(staged),
           "--outfile", str(out), "--outtype", outtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ExportError(f"llama.cpp's converter failed on {ckpt} (exit {proc.returncode}):\n{tail}")
    log(f"[export] {out.name}: {out.stat().st_size / 2**20:.1f} MiB (convert_hf_to_gguf, pre-tokenizer {pre})")
    return out


def quantize(src: Path, out: Path, qtype: str, threads: int = 0, log=print) -> Path:
    """Quantize GGUF file `src` to `qtype` (q4_k_m, ...) with llama.cpp's `llama_model_quantize`."""
    lc = llama_cpp()
    if qtype not in QUANT_TYPES:
        raise ExportError(f"unknown quantization {qtype!r}; llama.cpp types r1flow exports: {', '.join(GGUF_TYPES)}")
    params = lc.llama_model_quantize_default_params()
    params.ftype = getattr(lc, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}")
    params.nthread = threads
    rc = lc.llama_model_quantize(str(src).encode(), str(out).encode(), params)
    if rc != 0 or not out.is_file():
        raise ExportError(f"llama.cpp could not quantize {src.name} to {qtype} (llama_model_quantize returned {rc})")
    log(f"[export] {out.name}: {out.stat().st_size / 2**20:.1f} MiB (llama_model_quantize {qtype})")
    return out
