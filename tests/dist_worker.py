"""The torchrun worker of tests/test_multiprocess.py: a stage's own worker (`_worker` of
models/train/sft.py, grpo.py or reward_model.py, chosen by R1FLOW_TEST_STAGE) with a test reward
registered (`length`), and, when R1FLOW_TEST_KILL_AT is set, rank 1 SIGKILLed as it starts that step's checkpoint.
tasks/torchrun.py `launch` runs it as `-m dist_worker` with tests/ on PYTHONPATH."""

from __future__ import annotations

import os
import signal

from r1flow.data import rewards


def length_reward(completions, **_):
    """Grows with the completion's length: unlike accuracy on an untrained model it differs within a
    group, so GRPO's advantages are non-zero and the weights move."""
    return [len(c if isinstance(c, str) else c[-1]["content"]) / 100 for c in completions]



def kill_rank1_at(step: int) -> None:
    from transformers import Trainer

    original = Trainer._save_checkpoint

    def save(self, *args, **kwargs):
        if self.state.global_step == step and os.environ.get("RANK") == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)

    Trainer._save_checkpoint = save


if __name__ == "__main__":
    import importlib

    from r1flow.models.train.launch import worker_main

    rewards.REWARDS["length"] = length_reward
    if os.environ.get("R1FLOW_TEST_KILL_AT"):
        kill_rank1_at(int(os.environ["R1FLOW_TEST_KILL_AT"]))
    module = importlib.import_module(f"r1flow.models.train.{os.environ['R1FLOW_TEST_STAGE']}")
    worker_main(module._worker, "test worker")
