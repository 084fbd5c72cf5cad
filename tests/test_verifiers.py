# pytest tests/test_verifiers.py -q
"""Golden tests of the verifiers for imported data (data/verifiers.py through data/verify.py), the
adversarial cases included: the answer only in the reasoning, several boxed answers, an empty box,
units, fractions vs decimals, hedged multiple-choice letters, countdown expressions that cheat."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from r1flow.data import verifiers
from r1flow.data.rewards import accuracy_reward
from r1flow.data.verify import extract_answer, normalize, verify


def row(kind: str, answer: str, **meta) -> dict:
    return {"family": "bench", "kind": "reasoning", "answer": answer, "notation": "",
            "meta": json.dumps({"verifier": kind, **meta})}


def judge(completion: str, r: dict) -> bool | None:
    return verify(extract_answer(completion, r), r)


MATH = [  # (gold, completion, expected)
    ("42", "So we get \\boxed{42}.", True),
    ("42", "<think> 6*7 </think> <answer> 42 </answer>", True),
    ("42", "<think> 6*7 is 42 </think> <answer> 41 </answer>", False),
    ("\\frac{1}{2}", "The answer is \\boxed{0.5}", True),  # fraction vs decimal
    ("0.5", "\\boxed{\\dfrac{1}{2}}", True),
    ("5", "\\boxed{5\\text{ cm}}", True),  # units
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt3}{2}}", True),
    ("18", "Natalia sold 48/2 = 24 clips in May.\n#### 18", True),  # GSM8K's own format
    ("1000", "#### 1,000", True),
    ("72", "Answer: 72", True),
    ("72", "Therefore, the final answer is $72$.", True),
    ("42", "\\boxed{41} or maybe \\boxed{42}", None),  # several boxed answers that differ: no answer
    ("42", "first \\boxed{42}, checked: \\boxed{42}", True),  # the same answer twice is one answer
    ("42", "\\boxed{}", None),  # an empty box
    ("42", "<think> clearly \\boxed{42} </think> <answer> </answer>", None),  # only in the reasoning
    ("42", "<think> the result is \\boxed{42}", None),  # unclosed reasoning: no final answer yet
    ("42", "<answer>42</answer> <answer>43</answer>", None),  # several answer tags
    ("42", "I am not sure.", None),
    ("42", "<think> ok </think> The final answer is \\boxed{42}<|eos|>\\boxed{7}", True),  # after EOS ignored
]


@pytest.mark.parametrize("gold,completion,expected", MATH)
def test_math(gold, completion, expected):
    r = row("math", gold)
    got = judge(completion, r)
    assert got is expected, (gold, completion, extract_answer(completion, r))


def test_math_canonical_form_groups_equal_answers():
    r = row("math", "1/2")
    assert normalize("\\frac{1}{2}", r) == normalize("\\frac{2}{4}", r) != normalize("0.3", r)


GPQA_OPTIONS = ["Argon", "Neon", "Xenon", "Krypton"]


@pytest.mark.parametrize("completion,expected", [
    ("<answer> C </answer>", True),
    ("Answer: (C)", True),
    ("\\boxed{C}", True),
    ("The answer is C) Xenon.", True),
    ("<answer>Xenon</answer>", True),  # the option's text
    ("<answer> B </answer>", False),
    ("<answer>Krypton</answer>", False),
    ("\\boxed{B} or \\boxed{C}", None),  # hedging between letters
    ("<answer> E </answer>", False),  # not an option
    ("<think> it is C </think> <answer></answer>", None),
])
def test_multiple_choice(completion, expected):
    r = row("multiple_choice", "C", options=GPQA_OPTIONS)
    assert judge(completion, r) is expected


@pytest.mark.parametrize("completion,expected", [
    ("<answer> 1 + 2 * 3 + 4 </answer>", True),  # 11 from [1, 2, 3, 4]
    ("<answer> (4 - 3 + 2) * 1 * 3 + 2 </answer>", False),  # uses 3 twice and 2 twice
    ("<answer> 44 / 4 </answer>", False),  # numbers not given
    ("<answer> (1 + 2 * 3 + 4) = 11 </answer>", True),  # `expr = target`
    ("<answer> 4 * 3 - 2 + 1 </answer>", True),
    ("<answer> 4 * 3 - 2 / 1 </answer>", False),  # 10
    ("<answer> (3 / 3) </answer>", False),
    ("<answer> 1 + 2 * 3 + 4 / 0 </answer>", False),  # division by zero is wrong, not a crash
    ("<answer> __import__('os').system('true') </answer>", False),
    ("<think> 1 + 2 * 3 + 4 = 11 </think>", None),
])
def test_countdown(completion, expected):
    r = row("countdown", "11", numbers=[1, 2, 3, 4], target=11)
    assert judge(completion, r) is expected


def test_countdown_division_is_exact():
    r = row("countdown", "6", numbers=[8, 3, 4], target=6)
    assert judge("<answer> 8 * 3 / 4 </answer>", r) is True
    assert judge("<answer> 8 / 3 * 4 </answer>", r) is False  # 32/3, not rounded to an integer


@pytest.mark.parametrize("completion,expected", [
    ("<answer> Paris </answer>", True),
    ("Answer:   Paris.", True),
    ("<answer> paris </answer>", False),  # exact means exact
    ("<answer> Paris, France </answer>", False),
])
def test_exact(completion, expected):
    assert judge(completion, row("exact", "Paris")) is expected


def test_user_verifier(tmp_path, monkeypatch):
    (tmp_path / "my_verifier.py").write_text(textwrap.dedent("""
        def check(completion, row):
            if "???" in completion:
                return None
            return completion.strip().endswith(row["answer"])
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    r = row("my_verifier:check", "yes")
    assert judge("I say yes", r) is True
    assert judge("I say no", r) is False
    assert judge("???", r) is None
    # accuracy_reward passes the user's None through (cannot score), never a fake 0
    out = accuracy_reward(["I say yes", "no", "???"], family=["b"] * 3, answer=["yes"] * 3, meta=[r["meta"]] * 3)
    assert out == [1.0, 0.0, None]


@pytest.mark.parametrize("spec,needle", [
    ("nosuchmodule_xyz:check", "cannot import module 'nosuchmodule_xyz'"),
    ("json:nosuchfn", "has no function 'nosuchfn'"),
    ("regex", "not one of"),
])
def test_unknown_verifier_is_named(spec, needle):
    with pytest.raises(ValueError, match=needle):
        verifiers.check_kind(spec)


def test_world_rows_keep_the_world_verifier():
    r = {"family": "add", "kind": "reasoning", "answer": "7", "notation": "word", "meta": "{}"}
    assert judge("<answer> seven </answer>", r) is True  # word notation: the world's own verifier
    assert judge("<answer> 8 </answer>", r) is False


def test_accuracy_reward_on_a_raising_verifier_is_none(tmp_path, monkeypatch):
    (tmp_path / "bad_verifier.py").write_text("def check(completion, row):\n    raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = row("bad_verifier:check", "x")
    assert accuracy_reward(["x"], family=["b"], answer=["x"], meta=[r["meta"]]) == [None]
    assert "bad_verifier" in sys.modules
