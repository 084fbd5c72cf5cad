"""Rule rewards: golden cases incl. malformed and adversarial completions; timeouts.
    pytest tests/test_rewards.py"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from r1flow.data.rewards import RewardTimer, accuracy_reward, format_reward, with_timeout
from r1flow.models.train.grpo import group_advantages

ADD = {"family": "add", "answer": "29", "meta": json.dumps({"expr": "20 + 9"}), "kind": "reasoning"}
CD = {"family": "countdown", "answer": "2 + 9 - 5", "meta": json.dumps({"numbers": [2, 9, 5], "target": 6}),
      "kind": "reasoning"}

# (completion, problem, accuracy, format)
GOLDEN = [
    ("<think> 20 + 9 = 29. </think> <answer> 29 </answer>", ADD, 1.0, 1.0),
    ("<think> 20 + 9 = 29. </think> <answer> 28 </answer>", ADD, 0.0, 1.0),
    ("<think> twenty plus nine equals twenty nine. </think> <answer> twenty nine </answer>", ADD, 1.0, 1.0),  # other notation
    ("<think> 20 + 9 = 29. </think> <answer> 29", ADD, 0.0, 0.0),  # missing closing tag
    ("<think> 20 + 9 = 29. </think> <answer> 29 </answer> <answer> 29 </answer>", ADD, 0.0, 0.0),  # several answer tags
    ("<think> 20 + 9 = 29. </think> 29", ADD, 0.0, 0.0),  # answer outside the tags, no Answer: line
    ("<think> 20 + 9 = 29. </think> <answer> </answer>", ADD, 0.0, 0.0),  # empty answer
    ("<think> </think> <answer> 29 </answer>", ADD, 1.0, 0.0),  # empty reasoning
    ("<think><think><answer></answer></think> <answer> 29 </answer>", ADD, 0.0, 0.0),  # tag spam
    ("20 + 9 = 29. Answer: 29", ADD, 1.0, 0.0),  # untagged base-model style: right, unformatted
    ("<answer> 29 </answer>", ADD, 1.0, 0.0),  # no reasoning block
    ("Sure! <think> 20 + 9 = 29. </think> <answer> 29 </answer>", ADD, 1.0, 0.0),  # text before the think block
    ("<think> try 9 - 5 = 4. 4 + 2 = 6. </think> <answer> 9 - 5 + 2 </answer>", CD, 1.0, 1.0),
    ("<think> x </think> <answer> nine minus five plus two </answer>", CD, 1.0, 1.0),
    ("<think> x </think> <answer> 9 - 5 + 2 + 0 </answer>", CD, 0.0, 1.0),  # number not given
    ("<think> x </think> <answer> __import__('os').system('true') </answer>", CD, 0.0, 1.0),  # not arithmetic
    ("<think> x </think> <answer> 29 </answer><|eos|><answer> 1 </answer>", ADD, 1.0, 1.0),  # after EOS ignored
]


@pytest.mark.parametrize("completion,problem,acc,fmt", GOLDEN)
def test_golden(completion, problem, acc, fmt):
    cols = {k: [v] for k, v in problem.items()}
    assert accuracy_reward([completion], **cols) == [acc]
    assert format_reward([completion], **cols) == [fmt]


def test_rewards_accept_chat_style_completions():
    c = [[{"role": "assistant", "content": "<think> a </think> <answer> 29 </answer>"}]]
    cols = {k: [v] for k, v in ADD.items()}
    assert accuracy_reward(c, **cols) == [1.0] and format_reward(c, **cols) == [1.0]


def test_verifier_failure_is_none_not_zero():
    bad = dict(ADD, meta="not json", family="countdown")
    cols = {k: [v] for k, v in bad.items()}
    assert accuracy_reward(["<answer> 1 + 2 </answer>"], **cols) == [None]


def test_hanging_reward_is_cut_off_and_scored_none():
    def hangs(completions, **_):
        time.sleep(30)
        return [1.0] * len(completions)

    timer = RewardTimer()
    fn = with_timeout(hangs, seconds=0.5, timer=timer)
    t = time.perf_counter()
    assert fn(["a", "b"]) == [None, None]
    assert time.perf_counter() - t < 3 and timer.timeouts == 1 and fn.__name__ == "hangs"


def test_raising_reward_names_itself():
    def broken(completions, **_):
        raise KeyError("gold")

    with pytest.raises(RuntimeError, match="reward broken raised"):
        with_timeout(broken, 5)(["a"])


def test_group_advantages_match_grpo_formula():
    r = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    a = group_advantages(r, 4, "group")
    g0 = r[:4]
    assert a[:4] == pytest.approx((g0 - g0.mean()) / (g0.std(ddof=1) + 1e-4))
    assert a[4:] == pytest.approx([0.0] * 4)  # all-equal group: no signal
    assert group_advantages(r, 4, "none")[:4] == pytest.approx(g0 - g0.mean())
