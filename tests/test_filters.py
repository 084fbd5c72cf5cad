"""Cold-start / rejection-sampling filters: known-bad samples are rejected for the right reason and
good ones kept.   pytest tests/test_filters.py"""

from __future__ import annotations

import json

import pytest

from r1flow.data.filters import FilterConfig, card, dedupe, judge

SYM = {"family": "arith", "answer": "58", "meta": json.dumps({"expr": "2 + 8 * 7"}), "notation": "sym",
       "kind": "reasoning"}
WORD = SYM | {"notation": "word"}
CD = {"family": "countdown", "answer": "5 * 8 - 3", "meta": json.dumps({"numbers": [5, 8, 3], "target": 37}),
      "notation": "sym", "kind": "reasoning"}

GOOD = "<think> 8 * 7 = 56. 2 + 56 = 58. </think> <answer> 58 </answer>"
CASES = [
    (GOOD, SYM, None),
    ("<think> eight times seven equals fifty six. two plus fifty six equals fifty eight. </think> "
     "<answer> fifty eight </answer>", WORD, None),
    ("<think> try 5 * 8 = 40. 40 - 3 = 37. 37 is the target. </think> <answer> 5 * 8 - 3 </answer>", CD, None),
    ("<think> 8 * 7 = 56. 2 + 56 = 59. </think> <answer> 59 </answer>", SYM, "wrong_answer"),
    ("<think> 8 * 7 = 56. two plus fifty six equals fifty eight. </think> <answer> 58 </answer>", SYM,
     "mixed_notation"),
    ("<think> 8 * 7 = 56. 8 * 7 = 56. 8 * 7 = 56. 8 * 7 = 56. 2 + 56 = 58. </think> <answer> 58 </answer>", SYM,
     "repetition"),
    ("8 * 7 = 56. 2 + 56 = 58. Answer: 58", SYM, "missing_tags"),
    ("<think> 8 * 7 = 56. 2 + 56 = 58. <answer> 58 </answer>", SYM, "missing_tags"),
    ("<think> 8 * 7 = 56. 2 + 56 = 58. </think>", SYM, "missing_tags"),
    ("<think> " + " ".join(f"{i} + 0 = {i}." for i in range(40)) + " 8 * 7 = 56. 2 + 56 = 58. </think> "
     "<answer> 58 </answer>", SYM, "over_length"),
    ("<think> 5 * 8 = 40. 40 + 3 = 43. </think> <answer> 5 * 8 + 3 </answer>", CD, "wrong_answer"),
]


@pytest.mark.parametrize("completion,row,reason", CASES)
def test_each_sample_is_kept_or_rejected_for_the_right_reason(completion, row, reason):
    v = judge(completion, row)
    assert v.reason == reason and v.keep is (reason is None), v


def test_over_length_is_configurable_and_eos_ends_the_sample():
    assert judge(GOOD, SYM, FilterConfig(max_tokens=5)).reason == "over_length"
    assert judge(GOOD + "<|eos|> junk junk junk", SYM).keep  # after EOS nothing counts


def test_card_counts_first_reasons_and_duplicates():
    samples = [{"problem_id": "a", "completion": GOOD}, {"problem_id": "a", "completion": GOOD + "  "},
               {"problem_id": "b", "completion": GOOD}]
    kept, dropped = dedupe(samples)
    assert [s["problem_id"] for s in kept] == ["a", "b"] and dropped == 1
    verdicts = [judge(c, r) for c, r, _ in CASES]
    c = card(verdicts)
    assert c["samples"] == len(CASES) and c["kept"] == 3
    assert c["removed"]["wrong_answer"] == 2 and c["removed"]["missing_tags"] == 3
    assert c["removed"]["mixed_notation"] == c["removed"]["repetition"] == c["removed"]["over_length"] == 1


def test_checks_choose_which_filters_apply():
    bad_and_mixed = "<think> 8 * 7 = 56. two plus fifty six equals fifty nine. </think> <answer> 59 </answer>"
    assert judge(bad_and_mixed, SYM).reason == "wrong_answer"
    assert judge(bad_and_mixed, SYM, FilterConfig(checks=["mixed_notation"])).reason == "mixed_notation"
    assert judge(bad_and_mixed, SYM, FilterConfig(checks=["repetition", "over_length"])).keep
    # One notation throughout is the default; a looser share is a setting.
    mostly = "<think> 8 * 7 = 56. 2 + 56 = 58 fifty eight. </think> <answer> 58 </answer>"
    assert judge(mostly, SYM).reason == "mixed_notation"
    assert judge(mostly, SYM, FilterConfig(min_notation_share=0.7)).keep
