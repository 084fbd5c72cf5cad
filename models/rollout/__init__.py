"""Rollout engines: the `RolloutEngine` interface and in-process vLLM (engine.py), the same interface
over a fleet of vLLM servers (fleet.py). They sample and score tokens; they do not judge answers."""
