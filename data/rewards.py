"""Rule rewards for GRPO, and the per-call timeout every reward runs under.

A reward is a plain function `(completions, **columns) -> list[float | None]` (TRL's reward-function
protocol: `columns` are the prompt set's columns, one value per completion). It returns None for a
completion it cannot score (its verifier raised, or the call timed out), never a fake 0; TRL turns
None into NaN and leaves it out of the sum over reward functions.

  accuracy_reward  1 if the extracted answer verifies against the problem, else 0 (R1 sec. 2.2.2);
                   the problem's verifier is its row's (data/verify.py: world, math, countdown, ...)
  format_reward    1 if the completion is exactly <think> ... </think> <answer> ... </answer>
  language_reward  the share of the reasoning's notation-bearing words written in the prompt's
                   notation (R1 sec. 2.3.2's language-consistency reward, summed with accuracy);
                   0 for reasoning with no such word; None for imported prompts (no notation)
These three are rule rewards for reasoning prompts: on other prompts (instruction tasks, R1's general
data) they return None, and the learned reward model (`models/train/reward_model.py`, reward name
`helpfulness`) scores those instead, as in R1 sec. 2.3.4.

`with_timeout` runs a reward call in a worker thread and gives up after `seconds`: the step goes on
with None for that call's completions. A Python thread cannot be killed, so a verifier that never
returns keeps its (daemon) thread until the process ends; the step itself is never blocked.
This module does not aggregate rewards or compute advantages (TRL's GRPOTrainer does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from r1flow.data.notation import notation_share
from r1flow.data.verify import extract_answer, format_ok, reasoning_text, verify

log = logging.getLogger("r1flow.rewards")
RewardFn = Callable[..., list]


def _text(c: Any) -> str:
    # TRL passes strings for plain-text prompts and [{"role": "assistant", "content": ...}] for chat.
    return c if isinstance(c, str) else c[-1]["content"]


def accuracy_reward(completions: list, family: list[str], answer: list[str], meta: list[str],
                    kind: list[str] | None = None, **_: Any) -> list[float | None]:
    out: list[float | None] = []
    for c, fam, gold, m, k in zip(completions, family, answer, meta, _kinds(kind, completions)):
        if k != "reasoning":
            out.append(None)
            continue
        row = {"family": fam, "answer": gold, "meta": m, "kind": k}
        pred = None
        try:
            pred = extract_answer(_text(c), row)
            if pred is None:
                out.append(0.0)  # no answer given: scorable, and wrong
                continue
            ok = verify(pred, row)
        except Exception:  # noqa: BLE001 - a verifier failure is "cannot score" (None), logged
            log.exception("accuracy_reward: verifier failed on answer %r for %s problem", pred, fam)
            out.append(None)
            continue
        out.append(None if ok is None else 1.0 if ok else 0.0)  # None: a user verifier could not score
    return out


def format_reward(completions: list, kind: list[str] | None = None, **_: Any) -> list[float | None]:
    return [None if k != "reasoning" else 1.0 if format_ok(_text(c)) else 0.0
            for c, k in zip(completions, _kinds(kind, completions))]


def language_reward(completions: list, notation: list[str], kind: list[str] | None = None,
                    **_: Any) -> list[float | None]:
    out: list[float | None] = []
    for c, target, k in zip(completions, notation, _kinds(kind, completions)):
        if k != "reasoning" or not target:  # imported data has no notation to be consistent with
            out.append(None)
            continue
        share = notation_share(reasoning_text(_text(c)), target)
        out.append(0.0 if share is None else share)
    return out


def _kinds(kind: list[str] | None, completions: list) -> list[str]:
    return kind or ["reasoning"] * len(completions)


REWARDS: dict[str, RewardFn] = {"accuracy": accuracy_reward, "format": format_reward, "language": language_reward}
# Rewards a stage builds from one of its input artifacts (the reward model), not from this module.
LEARNED_REWARDS = ("helpfulness",)


class RewardTimer:
    """Seconds spent in reward calls (for the per-phase timing)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.timeouts = 0

    def take(self) -> tuple[float, int]:
        s, t = self.seconds, self.timeouts
        self.seconds, self.timeouts = 0.0, 0
        return s, t


def with_timeout(fn: RewardFn, seconds: float, timer: RewardTimer | None = None, name: str | None = None) -> RewardFn:
    """Wrap a reward so one call returns within `seconds`; on timeout every completion scores None.
    Errors name the reward as `name` (the recipe's reward name) or the function's name."""
    label = name or fn.__name__

    def wrapped(completions: list, **columns: Any) -> list[float | None]:
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["out"] = fn(completions=completions, **columns)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread below
                box["err"] = e

        t0 = time.perf_counter()
        worker = threading.Thread(target=run, name=f"reward-{label}", daemon=True)
        worker.start()
        worker.join(seconds)
        if timer:
            timer.seconds += time.perf_counter() - t0
        if worker.is_alive():
            log.warning("reward %s timed out after %.1fs on %d completions; scored None",
                        label, seconds, len(completions))
            if timer:
                timer.timeouts += 1
            return [None] * len(completions)
        if "err" in box:
            raise RuntimeError(f"reward {label} raised: {box['err']!r}") from box["err"]
        out = box["out"]
        if len(out) != len(completions):
            raise ValueError(f"reward {label} returned {len(out)} scores for {len(completions)} completions")
        return out

    wrapped.__name__ = getattr(fn, "__name__", label)
    wrapped.__qualname__ = getattr(fn, "__qualname__", label)
    return wrapped
