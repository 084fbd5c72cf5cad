"""Model-side library code, one sub-package per concern: arch/ (architectures and precision),
train/ (training loops), rollout/ (vLLM engines), eval/ (sampling, evaluation, the report) and
plan.py (the compute and cost planner). No Prefect import anywhere below."""
