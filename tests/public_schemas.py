# python tests/public_schemas.py configs/byod   (rewrites the BYOD smoke recipe's files)
"""Small data files in the exact column layout of the public datasets r1flow users bring (no hub access
here, so tests write them): GSM8K (openai/gsm8k), MATH (hendrycks competition_math), MATH-500
(HuggingFaceH4/MATH-500), AIME 2024 (HuggingFaceH4/aime_2024), GPQA (Idavidrein/gpqa CSV), Countdown
(Jiayi-Pan/Countdown-Tasks-3to4) and OpenR1-Math (open-r1/OpenR1-Math-220k, `messages`). The contents
are small arithmetic problems with correct gold answers, so a verifier that fails on them is wrong.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


def _problems(n: int, seed: int) -> list[tuple[int, int, int]]:
    pairs = random.Random(seed).sample([(a, b) for a in range(2, 41) for b in range(2, 41)], n)  # distinct
    return [(a, b, a + b) for a, b in pairs]


def _write(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        pacsv.write_csv(pa.Table.from_pylist(rows), path)
    else:
        raise ValueError(path)
    return path


def gsm8k(path: Path, n: int = 16, seed: int = 0) -> Path:
    """openai/gsm8k, config main: question, answer (worked solution, then `#### n`)."""
    return _write([{"question": f"Natalia had {a} clips and sold {b} more. How many clips did she sell altogether?",
                    "answer": f"She sold {a} + {b} = <<{a}+{b}={c}>>{c} clips.\n#### {c:,}"}
                   for a, b, c in _problems(n, seed)], path)


def math(path: Path, n: int = 16, seed: int = 1) -> Path:
    """hendrycks competition_math: problem, level, type, solution (answer in its last \\boxed{})."""
    return _write([{"problem": f"Compute ${a}+{b}$.", "level": f"Level {1 + i % 5}", "type": "Prealgebra",
                    "solution": f"We add: ${a}+{b}={c}$. The answer is $\\boxed{{{c}}}$."}
                   for i, (a, b, c) in enumerate(_problems(n, seed))], path)


def math500(path: Path, n: int = 8, seed: int = 2) -> Path:
    """HuggingFaceH4/MATH-500: problem, solution, answer, subject, level, unique_id."""
    rows = [{"problem": f"What is $\\frac{{{2 * a}}}{{4}} + {b}$? Express your answer as a common fraction.",
             "solution": f"$\\frac{{{2 * a}}}{{4}} = \\frac{{{a}}}{{2}}$, so the sum is $\\boxed{{\\frac{{{a + 2 * b}}}{{2}}}}$.",
             "answer": f"\\frac{{{a + 2 * b}}}{{2}}", "subject": "Prealgebra", "level": 2,
             "unique_id": f"test/prealgebra/{i}.json"} for i, (a, b, _) in enumerate(_problems(n, seed))]
    return _write(rows, path)


def aime(path: Path, n: int = 4, seed: int = 3) -> Path:
    """HuggingFaceH4/aime_2024: id, problem, solution, answer, url, year."""
    return _write([{"id": 60 + i, "problem": f"Find the remainder when ${a * 97 + b}$ is divided by $97$.",
                    "solution": f"${a * 97 + b} = {a}\\cdot 97 + {b}$.", "answer": str(b),
                    "url": f"https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_{i + 1}",
                    "year": "2024"} for i, (a, b, _) in enumerate(_problems(n, seed))], path)


def gpqa(path: Path, n: int = 8, seed: int = 4) -> Path:
    """Idavidrein/gpqa (gpqa_diamond.csv): Question, Correct Answer, Incorrect Answer 1-3 (and more columns)."""
    return _write([{"Record ID": f"rec{i:04d}", "Question": f"What is {a} plus {b}?", "Correct Answer": str(c),
                    "Incorrect Answer 1": str(c + 1), "Incorrect Answer 2": str(c - 1), "Incorrect Answer 3": str(c + 10),
                    "Explanation": f"{a} + {b} = {c}", "High-level domain": "Math"}
                   for i, (a, b, c) in enumerate(_problems(n, seed))], path)


def countdown(path: Path, n: int = 16, seed: int = 5) -> Path:
    """Jiayi-Pan/Countdown-Tasks-3to4: target, nums."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        nums = [rng.randint(1, 20) for _ in range(3)]
        rows.append({"target": nums[0] * nums[1] - nums[2], "nums": nums})
    return _write(rows, path)


def openr1(path: Path, n: int = 16, seed: int = 6) -> Path:
    """open-r1/OpenR1-Math-220k: problem, solution, answer, uuid, messages (user, then assistant)."""
    rows = []
    for i, (a, b, c) in enumerate(_problems(n, seed)):
        q = f"What is {a} + {b}?"
        rows.append({"problem": q, "solution": f"{a}+{b}={c}", "answer": str(c), "uuid": f"u-{i:04d}",
                     "messages": [{"role": "user", "content": q},
                                  {"role": "assistant", "content": f"<think> {a} + {b} = {c} </think> "
                                                                   f"<answer> {c} </answer>"}]})
    return _write(rows, path)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "configs/byod")
    for p in (gsm8k(out / "gsm8k_train.parquet"), openr1(out / "openr1_math.jsonl"),
              math500(out / "math500.jsonl"), gpqa(out / "gpqa_diamond.csv")):
        print(p)
