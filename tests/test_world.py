"""Task world, notations, verifiers and metrics.   pytest tests/test_world.py"""

from __future__ import annotations

import json

import pytest

from r1flow.data import metrics, notation, verify, world


@pytest.fixture(scope="module")
def small():
    cfg = world.WorldConfig(corpus_docs=3000)
    return cfg, world.World(cfg)


@pytest.mark.parametrize("n", [0, 7, 13, 20, 42, 99, 100, 305, 999, -17])
def test_number_words_roundtrip(n):
    assert notation.words_to_number(notation.number_to_words(n)) == n
    assert notation.parse_number(notation.number_to_words(n)) == n
    assert notation.parse_number(str(n)) == n


@pytest.mark.parametrize("bad", ["", "twenty twenty", "seven hundred hundred", "banana", "one two", "negative"])
def test_words_to_number_rejects_non_numbers(bad):
    assert notation.words_to_number(bad) is None


def test_words_to_expr_and_notation_share():
    assert notation.words_to_expr("three times four plus two") == "3 * 4 + 2"
    assert notation.words_to_expr("3 times four") == "3 * 4"
    assert notation.words_to_expr("three apples") is None
    assert notation.notation_share("3 + 4 = 7.", "sym") == 1.0
    assert notation.notation_share("three plus four equals 7.", "word") == pytest.approx(4 / 5)
    assert notation.notation_share("so, check.", "sym") is None


def test_splits_are_disjoint_from_the_corpus(small):
    cfg, w = small
    keys = world.corpus_keys(w)
    sets = world.build_prompt_sets(w, cfg)
    held = {(r["family"], r["question"]) for split in ("eval", "rl") for r in sets[split]}
    assert held and all(r["split"] in ("eval", "rl") for s in sets.values() for r in s)
    # No held-out problem's canonical key is a corpus key ...
    for fam in world.REASONING_FAMILIES + world.INSTRUCTION_FAMILIES:
        for split, p in w.problems(fam):
            if split != "corpus":
                assert p.key not in keys
    # ... and no held-out question text occurs in any corpus document.
    corpus = "\n".join(r["text"] for r in world.build_corpus(w, cfg))
    leaked = [q for fam, q in held if fam in world.REASONING_FAMILIES and f" {q}\n" in corpus]
    assert leaked == []


def test_corpus_is_deterministic_and_mixed(small):
    cfg, w = small
    a, b = world.build_corpus(w, cfg), world.build_corpus(w, cfg)
    assert a == b
    kinds = {r["doc_kind"] for r in a}
    assert kinds == {"worked", "bare", "chat", "instruction", "facts"}
    assert {r["notation"] for r in a} == {"sym", "word"}
    # The system prompt itself names the tags, so look at the assistant turn only.
    tagged = sum("<answer>" in r["text"].split("Assistant:")[-1] for r in a if r["doc_kind"] == "chat")
    chat = sum(r["doc_kind"] == "chat" for r in a)
    assert 0 < tagged < 0.2 * chat  # format starts rare: R1-Zero must learn it


def test_tagged_worked_solutions_are_an_opt_in_share(small):
    cfg, w = small
    off = world.build_corpus(w, cfg)
    on = world.build_corpus(w, cfg.model_copy(update={"tagged_worked_fraction": 0.5}))
    worked_on = [r["text"] for r in on if r["doc_kind"] == "worked"]
    n_tagged = sum("\nSolution: <think> " in t and t.endswith("</answer>") for t in worked_on)
    assert 0.35 * len(worked_on) < n_tagged < 0.65 * len(worked_on)
    assert not any("<think>" in r["text"] for r in off if r["doc_kind"] == "worked")


def test_gold_answers_verify_in_both_notations(small):
    cfg, w = small
    rows = world.build_prompt_sets(w, cfg)["eval"]
    for r in rows:
        p = world.Problem(family=r["family"], key="", notation=r["notation"], question=r["question"],
                          answer=r["answer"], meta=json.loads(r["meta"]))
        assert verify.verify(world.render_answer(p), r) is True, r
        assert verify.verify(r["answer"], r) is True, r
    wrong = next(r for r in rows if r["family"] == "add")
    assert verify.verify(str(int(wrong["answer"]) + 1), wrong) is False


def test_countdown_accepts_any_valid_expression_and_rejects_reuse():
    row = {"family": "countdown", "answer": "2 + 9 - 5", "meta": json.dumps({"numbers": [2, 9, 5], "target": 6})}
    assert verify.verify("9 - 5 + 2", row) is True
    assert verify.verify("nine minus five plus two", row) is True
    assert verify.verify("9 - 5 + 2 + 0", row) is False  # uses a number not given
    assert verify.verify("2 * 3", row) is False
    assert verify.verify("__import__('os')", row) is False


@pytest.mark.parametrize("completion,expected", [
    (" 3 + 4 = 7. Answer: 7", "7"),
    ("<think> 3 + 4 = 7. </think> <answer> 7 </answer>", "7"),
    ("<think> x </think> <answer> 7 </answer> <answer> 8 </answer>", None),  # several answers
    ("<think> x </think> <answer> 7", None),  # unclosed tag
    ("<answer>  </answer>", None),  # empty
    ("no answer here", None),
    ("Answer: seven<|eos|>Answer: 8", "seven"),  # text after EOS is ignored
])
def test_extract_answer(completion, expected):
    assert verify.extract_answer(completion, {"kind": "reasoning"}) == expected


def test_instruction_answers_are_the_response():
    assert verify.extract_answer(" fish lime moon<|eos|>", {"kind": "instruction"}) == "fish lime moon"
    assert verify.extract_answer(" fish lime moon", {"kind": "reasoning"}) is None
    row = {"family": "copy", "answer": "fish lime moon", "meta": "{}"}
    assert verify.verify(verify.extract_answer(" fish  lime moon\nUser: x", {"kind": "instruction"}), row) is True


def test_format_ok():
    assert verify.format_ok("<think> a </think> <answer> 7 </answer><|eos|>")
    assert not verify.format_ok("<think> a </think> 7")
    assert not verify.format_ok("hi <think> a </think> <answer> 7 </answer>")
    assert not verify.format_ok("<think> a <think> b </think> <answer> 7 </answer>")


def test_metrics_against_hand_computed_values():
    correct = [[True, False, False, False], [True, True, True, False], [False] * 4]
    assert metrics.pass_at_1(correct) == pytest.approx((0.25 + 0.75 + 0) / 3)
    answers = [["1", "2", "2", "3"], ["5", "5", "5", "6"], [None] * 4]
    # q0: majority "2" (wrong), q1: majority "5" (right), q2: nothing -> wrong
    assert metrics.cons_at_k(answers, correct) == pytest.approx(1 / 3)
    lo, hi = metrics.bootstrap_ci(correct, n_boot=2000)
    assert 0 <= lo <= metrics.pass_at_1(correct) <= hi <= 1
    assert metrics.bootstrap_ci([[True]] * 5) == (1.0, 1.0)


def test_paired_difference_interval():
    base = {f"q{i}": [False, False] for i in range(40)}
    same = dict(base)
    better = {k: [True, i % 2 == 0] for i, k in enumerate(base)}
    d, lo, hi, n = metrics.paired_diff_ci(better, base)
    assert n == 40 and d == pytest.approx(0.75) and 0 < lo <= d <= hi
    assert metrics.paired_diff_ci(same, base)[:3] == (0.0, 0.0, 0.0)
    # pairing: only shared problems count; a problem-level shift that is all noise straddles 0
    noisy = {k: [i % 2 == 0] * 2 for i, k in enumerate(base)}
    flip = {k: [i % 2 == 1] * 2 for i, k in enumerate(base)}
    d, lo, hi, _ = metrics.paired_diff_ci(noisy, flip | {"extra": [True]})
    assert d == 0.0 and lo < 0 < hi
