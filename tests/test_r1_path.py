"""The R1 path's pieces: the language-consistency reward, the readable rewrite of kept chains of
thought, the non-reasoning share of the mixture, and the reward model (pairs, training, scoring).
    pytest tests/test_r1_path.py"""

from __future__ import annotations

import json
import random

import pytest

from r1flow.data.rewards import accuracy_reward, format_reward, language_reward
from r1flow.models.eval.collect import CollectConfig, instruction_samples, judge_reasoning, readable, restate_answer
from r1flow.models.rollout.engine import Completion
from r1flow.models.train.reward_model import corrupt, preference_pairs

ARITH = {"id": "p1", "family": "arith", "answer": "58", "meta": json.dumps({"expr": "2 + 8 * 7"}), "notation": "sym",
         "kind": "reasoning", "question": "What is 2 + 8 * 7?"}
WORD = ARITH | {"id": "p2", "notation": "word", "question": "What is two plus eight times seven?"}
CD = {"id": "p3", "family": "countdown", "answer": "5 * 8 - 3", "notation": "word", "kind": "reasoning",
      "meta": json.dumps({"numbers": [5, 8, 3], "target": 37}), "question": "Use five, eight, three to make thirty seven."}


def _cols(rows, n=1):
    return {k: [r[k] for r in rows for _ in range(n)] for k in ("family", "answer", "meta", "notation", "kind")}


def test_language_reward_is_the_target_notation_share_of_the_reasoning():
    comps = ["<think> 8 * 7 = 56. 2 + 56 = 58. </think> <answer> 58 </answer>",
             "<think> 8 * 7 = 56. two plus fifty six equals fifty eight. </think> <answer> 58 </answer>",
             "<think> so. </think> <answer> 58 </answer>"]
    got = language_reward(comps, **_cols([ARITH] * 3))
    assert got[0] == 1.0 and 0.3 < got[1] < 0.7 and got[2] == 0.0
    # Only the reasoning counts: an answer in the other notation does not lower it.
    assert language_reward(["<think> 8 * 7 = 56. 2 + 56 = 58. </think> <answer> fifty eight </answer>"],
                           **_cols([ARITH]))[0] == 1.0


def test_rule_rewards_leave_general_prompts_to_the_reward_model():
    copy = {"family": "copy", "answer": "sun moon", "meta": "{}", "notation": "word", "kind": "instruction"}
    cols = _cols([ARITH, copy])
    comps = ["<think> 8 * 7 = 56. 2 + 56 = 58. </think> <answer> 58 </answer>", "sun moon"]
    for fn in (accuracy_reward, format_reward, language_reward):
        out = fn(comps, **cols)
        assert out[0] == 1.0 and out[1] is None, fn.__name__


def test_readable_rewrite_normalizes_and_restates_the_answer_in_the_problem_notation():
    text = "<think>  eight times seven equals fifty six .\n two plus fifty six equals fifty eight . </think>" \
           "<answer>58</answer><|eos|>"
    assert readable(text, WORD) == ("<think> eight times seven equals fifty six. two plus fifty six equals fifty "
                                    "eight. </think> <answer> fifty eight </answer>")
    assert restate_answer("5 * 8 - 3", CD) == "five times eight minus three"
    assert restate_answer("fifty eight", ARITH) == "58"


def _c(text):
    return Completion(text=text, token_ids=[1] * len(text.split()), finish_reason="stop")


def test_judge_reasoning_keeps_correct_readable_samples_capped_per_prompt():
    good = "<think> 8 * 7 = 56. 2 + 56 = 58. </think> <answer> 58 </answer>"
    comps = [[_c(good), _c(good + " "), _c("<think> 8 * 7 = 56. 2 + 56 = 58. so. </think> <answer> 58 </answer>"),
              _c("<think> 2 + 8 = 10. 10 * 7 = 70. </think> <answer> 70 </answer>"),
              _c("<think> 8 * 7 = 56. 2 + 56 = 58. </think> <answer> 58 </answer> <answer> 58 </answer>")]]
    kept, judged, counts = judge_reasoning([ARITH], comps, CollectConfig(max_per_prompt=1), source="r1_zero")
    assert len(kept) == 1 and kept[0]["response"] == good and kept[0]["source"] == "r1_zero"
    assert len(judged) == 5 and counts["removed"]["duplicate"] == 1 and counts["removed"]["wrong_answer"] == 1
    assert counts["removed"]["missing_tags"] == 1 and counts["over_max_per_prompt"] == 1 and counts["kept"] == 1


def test_instruction_samples_prefer_verified_policy_answers_then_the_world():
    rows = [{"id": f"c{i}", "family": "upper", "answer": f"SUN MOON {i}", "question": f"Uppercase: sun moon {i}",
             "notation": "word", "kind": "instruction", "meta": "{}"} for i in range(4)]
    comps = [[_c(f"SUN MOON {i}")] if i % 2 == 0 else [_c(f"sun moon {i}")] for i in range(4)]
    out, counts = instruction_samples(rows, comps, want=3)
    assert counts == {"instruction_prompts": 4, "from_policy": 2, "from_world": 1}
    assert all(s["response"] == r["answer"] for s in out for r in rows if r["id"] == s["problem_id"])


INSTR = [{"id": f"i{i}", "family": f, "question": q, "answer": a, "notation": "word", "kind": "instruction",
          "meta": "{}"} for i, (f, q, a) in enumerate([
              ("reverse", "Reverse: sun moon star", "star moon sun"), ("upper", "Uppercase: sun moon", "SUN MOON"),
              ("copy", "Copy: sun moon star", "sun moon star"), ("fact", "What is the color of kalo?", "red"),
              ("fact", "What is the color of mipo?", "blue"), ("fact", "What is the city of mipo?", "delta")])]


def test_near_misses_are_rejected_by_the_verifier():
    from r1flow.data.verify import verify

    rng = random.Random(0)
    for row in INSTR:
        miss = corrupt(row, rng, ["red", "blue"])
        assert miss != row["answer"] and verify(miss, row) is False, (row, miss)


def test_preference_pairs_prefer_the_verified_answer():
    from r1flow.data.verify import verify

    answers = [["star moon sun", "sun moon star"], ["sun moon"], [], ["red", "green"], ["blue"], ["delta"]]
    pairs = preference_pairs(INSTR, answers, per_prompt=2)
    assert pairs and all(verify(p["chosen"], r) and not verify(p["rejected"], r)
                         for p in pairs for r in INSTR if r["id"] == p["problem_id"])
    src: dict[str, list[str]] = {}
    for p in pairs:
        src.setdefault(p["problem_id"], []).append(p["source"])
    # The policy's own wrong answer first, then one rule-made near miss; the world's answer when the
    # policy has no right one.
    assert src["i0"] == ["policy/policy", "policy/rule"] and src["i1"] == ["world/policy", "world/rule"]
    assert src["i2"] == ["world/rule"]
    # A fact's near miss is another value of the same attribute, never a city for a color.
    assert next(p for p in pairs if p["problem_id"] == "i4")["rejected"] == "red"


def uppercase_pairs(n: int, words: str) -> list[dict]:
    """Preference pairs whose chosen side is the uppercased text and rejected side the text as given."""
    rng, vocab = random.Random(0), words.split()
    pairs = []
    for i in range(n):
        text = " ".join(rng.sample(vocab, 3))
        pairs.append({"problem_id": f"u{i}", "family": "upper", "question": f"Uppercase: {text}",
                      "chosen": text.upper(), "rejected": text, "source": "world/rule"})
    return pairs


@pytest.mark.slow
def test_reward_model_learns_a_checkable_preference_and_scores_general_prompts_only(smoke_run, tmp_path):
    from r1flow.models.train.reward_model import RewardModelConfig, RewardModelScorer, pair_accuracy, train_reward_model

    _, _, paths = smoke_run
    pairs = uppercase_pairs(160, "lime rock sun moon tree leaf river stone cloud bird fish lamp door road hill snow")
    cfg = RewardModelConfig(epochs=3, learning_rate=3e-3, batch_size=16, max_length=128)
    summary = train_reward_model(cfg, paths["pretrain"], pairs[:128], pairs[128:], tmp_path / "rm", tmp_path / "work")
    assert summary["heldout_pair_accuracy"] >= 0.9, summary
    scorer = RewardModelScorer(tmp_path / "rm")
    assert pair_accuracy(scorer, pairs[128:]) == summary["heldout_pair_accuracy"]
    got = scorer(["SUN MOON", "<think> x </think> <answer> 1 </answer>"], question=["Uppercase: sun moon", "What is 1?"],
                 kind=["instruction", "reasoning"])
    assert isinstance(got[0], float) and got[1] is None
    with pytest.raises(ValueError, match="not a reward model"):
        RewardModelScorer(paths["pretrain"])


def test_too_few_kept_samples_and_a_missing_reward_model_are_named(tmp_path):
    from r1flow.models.train.grpo import GRPOStageConfig, run_grpo
    from r1flow.tasks.sample import _require

    counts = {"removed": {"wrong_answer": 7}}
    with pytest.raises(ValueError, match=r"cold_start: only 1 samples passed the filters \(min_samples=16\).*wrong_answer"):
        _require("cold_start", [{}], 16, counts)
    cfg = GRPOStageConfig(rewards={"accuracy": 1.0, "helpfulness": 1.0})
    with pytest.raises(ValueError, match=r"reasoning_rl: reward\(s\) \['helpfulness'\] need a reward model input"):
        run_grpo(cfg, tmp_path / "no-model", [ARITH], tmp_path / "out", tmp_path / "work", stage="reasoning_rl")
    assert not (tmp_path / "out").exists()
