"""Parquet schemas the stages exchange, and a reader that checks them.

Every stage reads Parquet through `read_rows`/`write_rows`, so a file missing a required column,
truncated, or not Parquet at all fails with the file's name instead of deep inside a stage.
The files load as they are with `datasets.load_dataset("parquet", data_files=...)`, pandas and pyarrow.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from r1flow.data.store import ArtifactError

REQUIRED: dict[str, tuple[str, ...]] = {
    "corpus": ("text", "doc_kind", "family", "notation"),
    "prompts": ("id", "family", "level", "kind", "notation", "question", "answer", "solution", "split", "meta"),
    "eval_samples": ("checkpoint", "problem_id", "family", "sample", "completion", "answer", "correct"),
    "eval_summary": ("checkpoint", "family", "problems", "k", "pass@1", "ci_low", "ci_high", "cons@k"),
    # SFT data (cold start, the rejection-sampled mixture): one prompt-response pair per row.
    "sft_samples": ("problem_id", "family", "kind", "notation", "question", "response", "source"),
    # Every sampled completion with the filters' verdict (data/filters.py: Verdict.as_row).
    "judged_samples": ("problem_id", "family", "question", "completion", "source", "filter/keep", "filter/reason"),
    "preference_pairs": ("problem_id", "family", "question", "chosen", "rejected", "source", "split"),
}


def read_rows(path: str | Path, schema: str, columns: list[str] | None = None) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: file not found")
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise ArtifactError(f"{path}: not a readable Parquet file ({e})") from e
    missing = [c for c in REQUIRED[schema] if c not in table.column_names and (columns is None or c in columns)]
    if missing:
        raise ArtifactError(f"{path}: missing required {schema} columns {missing} (has {table.column_names})")
    if table.num_rows == 0:
        raise ArtifactError(f"{path}: no rows")
    return table.to_pylist()


def write_rows(rows: list[dict], path: str | Path, schema: str) -> None:
    if not rows:
        raise ValueError(f"refusing to write an empty {schema} table to {path}")
    missing = [c for c in REQUIRED[schema] if c not in rows[0]]
    if missing:
        raise ValueError(f"{schema} rows lack required columns {missing}")
    pq.write_table(pa.Table.from_pylist(rows), path)
