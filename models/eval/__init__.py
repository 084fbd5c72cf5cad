"""Sampling from a checkpoint and judging what it says: SFT data collection with filters
(collect.py), held-out evaluation (evaluate.py), the report that decides the paper's claims
(report.py) and the PNG plots (plots.py)."""
