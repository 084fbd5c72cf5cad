"""GGUF / Ollama / Hugging Face export (models/export/, tasks/export.py): the smoke run's exports of its MoE
base and the distilled student, re-checked here with llama.cpp; the pre-tokenizer mapping on
tokenizers built with each pre-tokenizer llama.cpp knows; the Ollama template derivation; the failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from r1flow.models.export.gguf import SPLIT_RE, ExportError, convert, pre_tokenizer
from r1flow.models.export.ollama import PROBES, TemplateError, render_go, verified_template

TEXTS = ["What is 12 + 345?", "I've been told he's there; 'RE you sure?\n\n  indented\ttab",
         "x = 3.14159 * (a+b)  # 1000000 digits", "Über naïve café — 東京 🦙 ", "<think> 7 * 8 = 56 </think> <answer> 56 </answer>", "line1\r\nline2\n\n\nline3   "]


def _assert_tokenizes_like(gguf: Path, tok, label: str) -> None:
    """llama.cpp, loading `gguf`, gives every text of TEXTS the tokens transformers' `tok` gives it."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=256, verbose=False, vocab_only=True)
    try:
        for t in TEXTS:
            assert llm.tokenize(t.encode(), add_bos=True, special=True) == tok(t)["input_ids"], (label, t)
    finally:
        llm.close()


def _export_refs(store: Path, paths: dict) -> dict:
    """Label -> the smoke run's export artifact. By the run's own nodes, not by stage: other tests (BYOD,
    deployments) run their pipelines into the same session store."""
    from r1flow.data.store import ArtifactStore

    st = ArtifactStore(store)
    return {k.split(":", 1)[1]: st.ref(Path(p).name) for k, p in paths.items() if k.startswith("export:")}


def test_smoke_exports_pass_the_llama_cpp_check(smoke_run):
    """The smoke run exported its MoE base and the distilled student: every GGUF file (f16 from the
    converter, q8_0, q4_k_m from llama.cpp's quantizer) passed the check; re-check the f16 files here."""
    from transformers import AutoTokenizer

    recipe, store, paths = smoke_run
    refs = _export_refs(store, paths)
    assert set(refs) == {"base", "qwen2_s_distill"}
    for label, ref in refs.items():
        res = json.loads(ref.file("export.json").read_text())
        assert [g["type"] for g in res["gguf"]] == ["f16", "q8_0", "q4_k_m"], label
        for g in res["gguf"]:
            assert g["passed"] and g["tokens_equal"] == g["prompts"] == recipe.export.check.prompts, (label, g)
            stat = g["max_abs_logprob_diff"] if g["bound_on"] == "max" else g["mean_abs_logprob_diff"]
            assert stat <= g["bound"] and g["bound_on"] == ("max" if g["type"] == "f16" else "mean"), (label, g)
        f16 = res["gguf"][0]
        assert f16["greedy_equal"] == f16["greedy_prompts"] > 0 and f16["max_abs_logprob_diff"] < 5e-2
        # An independent look: llama.cpp loads the file and tokenizes like transformers.
        _assert_tokenizes_like(ref.file(f16["path"]), AutoTokenizer.from_pretrained(ref.file("hf")), label)


def test_modelfile_and_hf_folder(smoke_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1flow.data.store import ArtifactStore

    _, store, paths = smoke_run
    st = ArtifactStore(store)
    for label, ref in _export_refs(store, paths).items():
        res = json.loads(ref.file("export.json").read_text())
        tok = AutoTokenizer.from_pretrained(ref.file("hf"))
        for g in res["gguf"]:
            mf = ref.file(g["modelfile"]).read_text()
            assert mf.startswith(f"FROM ./{Path(g['path']).name}\n"), mf
            assert f'PARAMETER stop "{tok.eos_token}"' in mf and "PARAMETER temperature 0.6" in mf
            assert "PARAMETER top_p 0.95" in mf
            template = mf.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
            for msgs in [*PROBES, [{"role": "user", "content": "Reverse: a b c"}]]:
                assert render_go(template, msgs) == tok.apply_chat_template(msgs, tokenize=False,
                                                                            add_generation_prompt=True)
        card = ref.file("hf/README.md").read_text()
        ckpt = st.manifest(st.manifest(ref.id).parents[0])
        assert ckpt.stage in ("pretrain", "final_rl", "distill") and ckpt.id[:12] in card
        assert all(p[:12] in card for p in ckpt.parents), label  # the lineage names its parents
        assert "## Evaluation" in card and "| add |" in card and "## Training data" in card
        gen = json.loads(ref.file("hf/generation_config.json").read_text())
        assert gen["do_sample"] and gen["temperature"] == 0.6 and gen["top_p"] == 0.95
        model = AutoModelForCausalLM.from_pretrained(ref.file("hf"))
        assert model.config.architectures == json.loads(ref.file("hf/config.json").read_text())["architectures"]
        assert not (Path(ref.path) / "hf" / "r1flow").exists()


def test_report_lists_exports(smoke_run):
    from r1flow.data.store import ArtifactStore

    _, store, paths = smoke_run
    st = ArtifactStore(store)
    rep = st.manifest(Path(paths["report"]).name)
    md = st.ref(rep.id).file("report.md").read_text()
    assert "## Exports" in md and "ollama create smoke-base:q4_k_m" in md and "qwen2_s_distill | gguf f16" in md
    assert set(rep.parents) >= {r.id for r in _export_refs(store, paths).values()}


def _tokenizer(pre, tmp: Path, normalizer=None) -> Path:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    tok.normalizer = normalizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 20 + [f"{i} + {i * 7} = {i * 8}, don't we'll" for i in range(300)], trainer)
    d = tmp / "tok"
    d.mkdir(parents=True)
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|bos|>", "eos_token": "<|eos|>",
        "pad_token": "<|pad|>", "chat_template": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"}))
    return d


def _byte_level(regex: bool):
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=regex)


PRE = {
    "gpt-2": lambda: _byte_level(True),
    "starcoder": lambda: pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _byte_level(True)]),
    "qwen2": lambda: pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(SPLIT_RE["qwen2"]), "isolated"),
                                              _byte_level(False)]),
    "llama-bpe": lambda: pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(SPLIT_RE["llama-bpe"]), "isolated"),
                                                  _byte_level(False)]),
}


@pytest.mark.parametrize("name", sorted(PRE))
def test_pre_tokenizer_mapping_tokenizes_like_transformers(name, tmp_path):
    """A retrained tokenizer with each pre-tokenizer llama.cpp knows: the mapping names it, the converter
    accepts it, and llama.cpp tokenizes every text exactly as transformers does."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    # Qwen2's tokenizers normalize to NFC; so does every tokenizer transformers 5 loads for a qwen2 model.
    d = _tokenizer(PRE[name](), tmp_path, normalizers.NFC() if name == "qwen2" else None)
    assert pre_tokenizer(json.loads((d / "tokenizer.json").read_text())) == name
    tok = AutoTokenizer.from_pretrained(d)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
                                 pad_token_id=0)).save_pretrained(d)
    _assert_tokenizes_like(convert(d, tmp_path / "m.gguf", "f32", tmp_path / "work", log=lambda _: None), tok, name)


def test_unknown_pre_tokenizer_fails_clearly(tmp_path):
    d = _tokenizer(pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), _byte_level(True)]), tmp_path)
    with pytest.raises(ExportError, match="no pre-tokenizer equivalent.*WhitespaceSplit"):
        convert(d, tmp_path / "m.gguf", "f16", tmp_path / "work")
    assert not (tmp_path / "m.gguf").exists()
    # A normalizer llama.cpp would not apply rules a mapping out (Qwen2's NFC aside).
    spec = json.loads(_tokenizer(PRE["starcoder"](), tmp_path / "s").joinpath("tokenizer.json").read_text())
    assert pre_tokenizer(spec) == "starcoder"
    spec["normalizer"] = {"type": "NFC"}
    with pytest.raises(ExportError, match='normalizer {"type": "NFC"}'):
        pre_tokenizer(spec)


def test_ollama_template_refuses_position_dependent_chat_templates(tmp_path):
    """A chat template that inserts a default system turn when none is given (Qwen2.5's does) is not a
    per-role template: the derivation says so instead of writing a wrong TEMPLATE."""
    from transformers import AutoTokenizer

    d = _tokenizer(PRE["gpt-2"](), tmp_path)
    tok = AutoTokenizer.from_pretrained(d)
    assert render_go(verified_template(tok), PROBES[2]) == tok.apply_chat_template(PROBES[2], tokenize=False,
                                                                                    add_generation_prompt=True)
    tok.chat_template = ("{% if messages[0]['role'] != 'system' %}system: You are helpful.\n{% endif %}"
                         "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant:{% endif %}")
    with pytest.raises(TemplateError, match="derived Ollama template renders"):
        verified_template(tok)


def test_failures_name_the_problem(smoke_run, tmp_path):
    """The check fails with its numbers when the file is not the checkpoint (the student's GGUF against
    R1's weights); `r1flow export` refuses a non-checkpoint and an unknown type before any work."""
    import subprocess
    import sys

    from r1flow.data.store import ArtifactStore
    from r1flow.models.export.check import check_gguf

    _, store, paths = smoke_run
    refs = _export_refs(store, paths)
    student = refs["qwen2_s_distill"]
    f16 = student.file(json.loads(student.file("export.json").read_text())["gguf"][0]["path"])
    with pytest.raises(ExportError, match=r"log-probs differ by up to .* nats \(bound 0.05 for f16\)"):
        check_gguf(f16, "f16", Path(paths["final_rl"]), ["User: What is 2 + 3?\nAssistant:"], greedy=1)
    st = ArtifactStore(store)
    world = next(m.id for m in st.list() if m.stage == "world")
    before = {m.id for m in st.list()}
    for args, msg in (([world[:12]], "export takes a checkpoint"), ([Path(paths["final_rl"]).name[:12], "--quant", "q9_z"],
                                                                    "unknown GGUF type")):
        out = subprocess.run([sys.executable, "-m", "r1flow.cli", "export", *args, "--store", str(store)],
                             capture_output=True, text=True, timeout=300, check=False)
        assert out.returncode == 2 and msg in out.stderr, out.stderr[-2000:]
    assert {m.id for m in st.list()} == before


def test_export_labels_are_checked_before_any_work(tmp_path):
    import subprocess
    import sys

    import yaml

    from r1flow.recipe import load_recipe
    from r1flow.stages import dag

    with pytest.raises(ValueError, match=r"export.checkpoints: \['r2'\] are not checkpoints of this recipe"):
        dag(load_recipe("configs/smoke.yaml", {"export": {"checkpoints": ["r2"]}}))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(Path("configs/smoke.yaml").read_text()), "export": {"checkpoints": ["r2"]}}))
    out = subprocess.run([sys.executable, "-m", "r1flow.cli", "validate", "--recipe", str(bad)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2 and "export.checkpoints" in out.stderr, out.stderr
    assert [n.key for n in dag(load_recipe("configs/smoke.yaml", {"export": {"checkpoints": []}}))
            if n.stage == "export"] == []
