"""The report's claims are decided by their stated rules from the numbers, in both directions; its
plots are written; a dense student's tokenizer keeps its vocabulary.
    pytest tests/test_report.py"""

from __future__ import annotations

import json

import pytest

from r1flow.models.eval import report
from r1flow.models.eval.evaluate import summarize


def _samples(label: str, correct_rate: dict[str, float], n_problems: int = 40, k: int = 4, length: int = 30,
             share: float = 1.0, wrong_answers_agree: bool = False) -> list[dict]:
    """k samples for each of n problems per family; in problem i, sample j is right when
    (i + j) / k falls below the rate, so pass@1 is close to the rate."""
    out = []
    for fam, rate in correct_rate.items():
        for i in range(n_problems):
            right = [(i * 7 + j) % (k * 10) / (k * 10) < rate for j in range(k)]
            for j, ok in enumerate(right):
                wrong = "w" if wrong_answers_agree else f"w{j}"
                out.append({"checkpoint": label, "problem_id": f"{fam}{i}", "family": fam, "kind": "reasoning",
                            "sample": j, "correct": ok, "answer_norm": "a" if ok else wrong, "format_ok": True,
                            "eos": True, "length": length, "notation_share": share})
    return out


def _evals(spec: dict[str, dict]) -> dict[str, dict]:
    out = {}
    for label, kw in spec.items():
        s = _samples(label, **kw)
        out[label] = {"summary": summarize(s, n_boot=200), "samples": s}
    return out


def _curve(lengths: list[float]) -> list[dict]:
    return [{"step": i + 1, "rl/completion_length": v, "rl/accuracy": 0.5} for i, v in enumerate(lengths)]


FAM = ("add", "arith")


def test_all_four_claims_hold_when_the_numbers_say_so():
    evals = _evals({"base": {"correct_rate": dict.fromkeys(FAM, 0.2)},
                    "r1_zero": {"correct_rate": dict.fromkeys(FAM, 0.6), "share": 0.8},
                    "r1": {"correct_rate": dict.fromkeys(FAM, 0.6), "share": 1.0},
                    "s_distill": {"correct_rate": dict.fromkeys(FAM, 0.5)},
                    "s_rl": {"correct_rate": dict.fromkeys(FAM, 0.1)}})
    claims = report.check_claims(evals, {"r1_zero": _curve([20] * 10 + [40] * 10)}, ["s"],
                                 {"s_distill": 10.0, "s_rl": 30.0})
    assert [c.verdict for c in claims] == ["holds"] * 4, [c.evidence for c in claims]
    assert "base 0.200 -> r1_zero 0.600" in claims[0].evidence and "20.0 (first quarter) -> 40.0" in claims[0].evidence
    assert "0.800" in claims[1].evidence and "compute: distill 10 s vs RL 30 s" in claims[3].evidence
    assert claims[3].evidence.startswith("traces from r1, pass@1 0.600;")
    # A teacher imported with distill.teacher_from is evaluated as "teacher"; claim 4 names it instead.
    evals |= _evals({"teacher": {"correct_rate": dict.fromkeys(FAM, 0.9)}})
    c4 = report.check_claims(evals, {}, ["s"])[3]
    assert c4.verdict == "holds" and c4.evidence.startswith("traces from distill.teacher_from, pass@1 0.900;")


def test_each_claim_fails_on_its_own_rule():
    evals = _evals({"base": {"correct_rate": dict.fromkeys(FAM, 0.4)},
                    "r1_zero": {"correct_rate": dict.fromkeys(FAM, 0.4), "share": 1.0},
                    # R1 loses accuracy beyond the interval; all its wrong answers agree, so cons@k drops.
                    "r1": {"correct_rate": dict.fromkeys(FAM, 0.1), "share": 1.0, "wrong_answers_agree": True},
                    "s_distill": {"correct_rate": dict.fromkeys(FAM, 0.2)},
                    "s_rl": {"correct_rate": dict.fromkeys(FAM, 0.2)}})
    claims = report.check_claims(evals, {"r1_zero": _curve([40] * 10 + [20] * 10)}, ["s"])
    assert [c.verdict for c in claims] == ["does not hold"] * 4, [c.evidence for c in claims]
    # Length alone can fail claim 1: accuracy up, length down.
    evals["r1_zero"] = _evals({"r1_zero": {"correct_rate": dict.fromkeys(FAM, 0.8)}})["r1_zero"]
    c1 = report.check_claims(evals, {"r1_zero": _curve([40] * 10 + [20] * 10)}, ["s"])[0]
    assert c1.verdict == "does not hold" and "40.0 (first quarter) -> 20.0" in c1.evidence


def test_claims_without_their_checkpoints_are_not_measured():
    evals = _evals({"base": {"correct_rate": dict.fromkeys(FAM, 0.2)}})
    assert [c.verdict for c in report.check_claims(evals, {}, [])] == ["not measured"] * 4
    # Too few RL steps for a length trend: not measured rather than a verdict on NaN.
    evals |= _evals({"r1_zero": {"correct_rate": dict.fromkeys(FAM, 0.6)}})
    assert report.check_claims(evals, {"r1_zero": _curve([1, 2])}, [])[0].verdict == "not measured"


def test_length_trend():
    first, last, slope = report.length_trend(_curve([10, 10, 20, 20, 30, 30, 40, 40]))
    # Least squares over steps 1..8: covariance 200 / variance 42 tokens per step.
    assert (first, last) == (10, 40) and slope == pytest.approx(100 * 200 / 42)


def test_comparison_rows_pair_every_checkpoint_with_the_first(tmp_path):
    evals = _evals({"base": {"correct_rate": dict.fromkeys(FAM, 0.2)},
                    "r1_zero": {"correct_rate": dict.fromkeys(FAM, 0.6)}})
    rows = report.comparison_rows(evals)
    assert {(r["family"], r["checkpoint"]) for r in rows} == {(f, c) for f in (*FAM, "reasoning (all)")
                                                              for c in ("base", "r1_zero")}
    up = next(r for r in rows if r["checkpoint"] == "r1_zero" and r["family"] == "reasoning (all)")
    assert up["delta"] == pytest.approx(0.4, abs=0.05) and up["delta_low"] > 0
    claims = report.check_claims(evals, {}, [])
    report.plot_accuracy(evals, tmp_path / "accuracy.png")
    report.plot_rl_curves({"r1_zero": _curve(list(range(40)))}, tmp_path / "rl_curves.png")
    md = report.report_markdown("t", evals, claims, [tmp_path / "accuracy.png", tmp_path / "rl_curves.png"])
    assert md.count("| 1 |") == 1 and "![rl_curves](rl_curves.png)" in md and "**up**" in md
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    json.dumps([c.as_row() for c in claims])


def test_pin_tokenizer_keeps_a_qwen2_students_vocabulary(tmp_path):
    """transformers loads any qwen2 checkpoint with Qwen2Tokenizer, which adds an unk token unless the
    tokenizer config names one (models/arch/dense.py: pin_tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from r1flow.models.arch.dense import FLAVORS, pin_tokenizer

    tk = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<|eos|>": 2, "<|pad|>": 3}, unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|eos|>", pad_token="<|pad|>")
    cfg = FLAVORS["debug"].model_copy(update={"arch": "qwen2"}).to_hf(vocab_size=4, bos_token_id=None,
                                                                       eos_token_id=2, pad_token_id=3)
    tok.save_pretrained(tmp_path)
    cfg.save_pretrained(tmp_path)
    assert len(AutoTokenizer.from_pretrained(tmp_path)) == 5  # the bug pin_tokenizer works around
    pin_tokenizer(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert len(again) == 4 and again("a b")["input_ids"] == [0, 1]
