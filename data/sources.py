"""Bring your own data: a named data source in the recipe (`data:`), loaded with `datasets`, mapped onto
the rows every stage already reads, and checked before any training.

A source is a local Parquet / JSONL / CSV file, folder or glob, an fsspec URL (s3://, gs://, https://),
or a Hugging Face dataset id (with config, split and revision), always loaded through
`datasets.load_dataset`. A column mapping says which column holds what; the rows become either
  prompts   (data/schemas.py "prompts": id, question, answer, solution, level, meta with the verifier)
            for RL, for the sampling stages' prompt sets and for benchmarks, or
  sft       (data/schemas.py "sft_samples" plus `messages`): an OpenR1-Math-style `messages` list or a
            prompt/completion pair, for the SFT stages.
The public schemas it knows how to read (tests/test_sources.py writes each):
  GSM8K      question, answer ("... #### 72")          -> answer 72 (the text before #### is the solution)
  MATH       problem, solution (\\boxed{}), level, type -> answer: the solution's last \\boxed{}
  MATH-500, AIME   problem, answer
  GPQA       Question, Correct Answer, Incorrect Answer 1-3 -> options shuffled per problem (seeded), A-D
  Countdown  nums, target (TinyZero)                   -> the question TinyZero asks, checked by `countdown`
  OpenR1-Math  messages ([{role, content}, ...])

Bad data fails here, before any training, naming the file (or hub id) and the column: a missing column
(with the closest existing name), an empty file, split or filter result, gold answers the verifier
cannot parse above `max_unparsable`, duplicate ids, an unknown verifier, a hub id that cannot be
loaded. `fingerprint` hashes every local file so that a file changed after import re-keys the import
(and `load` re-checks the hashes it was planned with). Nothing here trains, samples or writes the store.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import json
import os
import random
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from r1flow.data import verifiers

FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
# TinyZero's Countdown question (Jiayi-Pan/TinyZero examples/data_preprocess/countdown.py), without
# the template around it: the recipe's prompt template adds that.
COUNTDOWN_QUESTION = ("Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
                      "arithmetic operations (+, -, *, /) and each number can only be used once.")


# What an import artifact holds, by use: (file, data/schemas.py schema).
IMPORT_FILES = {"prompts": ("prompts.parquet", "prompts"), "sft": ("samples.parquet", "sft_samples")}
WORLD = "world"  # in a stage's `datasets`: the generated world's prompts


class PromptSources(BaseModel):
    """Where a stage's prompts come from and how they are asked (RL and sampling stages)."""

    model_config = ConfigDict(extra="forbid")

    datasets: list[str] = Field(default_factory=list, description=(
        "Imported prompt sources (names in the recipe's `data:`). Empty: the generated world's prompts of "
        "`families`. List 'world' among them to mix the world's prompts in."))
    template: str = Field("r1_zero", description=(
        "How imported problems are asked: r1_zero (R1 Table 1), chat (the tokenizer's chat template), or "
        "your own prompt text with {question}."))

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        from r1flow.data.templates import check_template

        return check_template(v)

    def uses_world(self) -> bool:
        return not self.datasets or WORLD in self.datasets

    def imported(self) -> list[str]:
        return [d for d in self.datasets if d != WORLD]


class DataError(ValueError):
    """Data that cannot be used; the message names the source, the file and the column."""


class Columns(BaseModel):
    """Which column of the source holds what (names as in the source). Unset fields are not read."""

    model_config = ConfigDict(extra="forbid")

    problem: str | None = Field(None, description="The question (GSM8K `question`, MATH `problem`, GPQA `Question`).")
    answer: str | None = Field(None, description="The gold answer (MATH-500 `answer`; GSM8K's `answer`, cut at ####).")
    solution: str | None = Field(None, description="A worked solution (MATH `solution`); its last \\boxed{} is the "
                                                   "answer when no answer column is mapped.")
    id: str | None = Field(None, description="Unique problem id; default: a hash of the question.")
    level: str | None = Field(None, description="Difficulty (MATH `level`, 'Level 3' -> 3), for filters and tables.")
    correct: str | None = Field(None, description="Multiple choice: the correct option's text (GPQA `Correct Answer`).")
    incorrect: list[str] = Field(default_factory=list, description="Multiple choice: the wrong options' columns.")
    numbers: str | None = Field(None, description="Countdown: the list of numbers (TinyZero `nums`).")
    target: str | None = Field(None, description="Countdown: the target (TinyZero `target`).")
    messages: str | None = Field(None, description="SFT: a list of {role, content} (OpenR1-Math `messages`).")
    prompt: str | None = Field(None, description="SFT: the prompt text (prompt/completion form).")
    completion: str | None = Field(None, description="SFT: the completion text (prompt/completion form).")

    def used(self) -> list[tuple[str, str]]:
        """(field, source column) for every mapped field."""
        out = [(k, v) for k, v in self.model_dump().items() if isinstance(v, str)]
        return out + [(f"incorrect.{i}", c) for i, c in enumerate(self.incorrect)]


class DataSource(BaseModel):
    """One named data source of the recipe's `data:` section."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="Local file, folder or glob, or an fsspec URL (Parquet, JSONL, CSV).")
    hub: str | None = Field(None, description="Hugging Face dataset id, loaded with datasets.load_dataset.")
    config: str | None = Field(None, description="Hub dataset config (e.g. 'main' for GSM8K).")
    split: str = Field("train", description="Split to load.")
    revision: str | None = Field(None, description="Hub revision (commit, tag or branch); pin it: the cache key "
                                                   "covers the name given, not what a branch points to today.")
    format: Literal["parquet", "json", "csv"] | None = Field(None, description="Default: from the file extension.")
    use: Literal["prompts", "sft"] = Field("prompts", description="Problems with gold answers (RL, sampling, "
                                                                  "benchmarks) or SFT conversations.")
    columns: Columns = Field(default_factory=Columns, description="Column mapping.")
    verifier: str = Field("math", description="How answers are checked: math, multiple_choice, exact, countdown, "
                                              "or your own `module:function` (data/verifiers.py).")
    rows: tuple[int, int] | None = Field(None, description="Rows [start, stop) of the source in file order, before "
                                                           "`where` (TinyZero: train = rows 0-8001 of Countdown).")
    where: dict[str, list] = Field(default_factory=dict, description="Keep rows whose column value is in the list, "
                                                                     "e.g. {level: ['Level 3', 'Level 4', 'Level 5']}.")
    sample: int | None = Field(None, ge=1, description="Keep this many rows, drawn at random (seeded).")
    seed: int = Field(0, description="Seed of `sample` and of the option shuffle of multiple choice.")
    max_unparsable: float = Field(0.0, ge=0, le=1, description="Largest share of gold answers the verifier cannot "
                                                               "parse; more fails the import.")
    decontaminate: Literal["report", "drop"] = Field(
        "report", description="Rows sharing an n-gram with a benchmark of evaluate.benchmarks: counted in the "
                              "data card (report) or also removed (drop).")
    ngram: int = Field(8, ge=1, description="n of the overlap check (open-r1's decontaminate.py: 8). A question "
                                            "shorter than n words is compared whole: a large n makes the check an "
                                            "exact-duplicate test, for templated questions (Countdown).")

    @model_validator(mode="after")
    def _check(self) -> DataSource:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of `path` (a file, folder, glob or URL) and `hub` (a dataset id)")
        c = self.columns
        if self.use == "sft":
            if not (c.messages or (c.prompt and c.completion)):
                raise ValueError("use: sft needs columns.messages, or columns.prompt and columns.completion")
            return self
        verifiers.check_kind(self.verifier)
        if self.verifier == "countdown":
            if not (c.numbers and c.target):
                raise ValueError("verifier countdown needs columns.numbers and columns.target")
        elif not c.problem:
            raise ValueError("use: prompts needs columns.problem")
        elif self.verifier == "multiple_choice":
            if not (c.correct and c.incorrect):
                raise ValueError("verifier multiple_choice needs columns.correct and columns.incorrect")
        elif not (c.answer or c.solution):
            raise ValueError("use: prompts needs columns.answer or columns.solution")
        return self

    @field_validator("verifier")
    @classmethod
    def _verifier(cls, v: str) -> str:
        return verifiers.check_kind(v)

    def label(self) -> str:
        return self.path if self.path else f"hub:{self.hub}" + (f"/{self.config}" if self.config else "")


# ---- files and their hashes --------------------------------------------------------------------------------
def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def local_files(src: DataSource) -> list[Path]:
    """The files a local `path` names, sorted; an error names the path when there are none."""
    p = Path(os.path.expanduser(src.path))
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix in FORMATS and f.is_file())
    elif any(ch in src.path for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(os.path.expanduser(src.path), recursive=True) if Path(f).is_file())
    else:
        files = [p] if p.is_file() else []
    if not files:
        raise DataError(f"{src.path}: no such file, or no {'/'.join(FORMATS)} files in it")
    return files


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) within the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def fingerprint(src: DataSource) -> dict:
    """What the import's cache key covers besides the config: local files' sha256, a URL's size and
    modification stamp, a hub source's id/config/split/revision (already in the config)."""
    if src.hub:
        return {"hub": src.hub, "revision": src.revision}
    if _is_url(src.path):
        import fsspec

        fs, _, paths = fsspec.get_fs_token_paths(src.path)
        info = [fs.info(p) for p in paths]
        return {"url": src.path, "files": [{k: str(i.get(k)) for k in ("name", "size", "ETag", "etag", "mtime",
                                                                       "LastModified") if i.get(k) is not None}
                                           for i in info]}
    return {"files": {str(f): file_sha256(f) for f in local_files(src)}}


# ---- loading -----------------------------------------------------------------------------------------------
def _format(src: DataSource, files: list[str]) -> str:
    if src.format:
        return src.format
    exts = {FORMATS.get(Path(f.split("?")[0]).suffix) for f in files}
    if len(exts) != 1 or None in exts:
        raise DataError(f"{src.label()}: cannot tell the format from the file names {files[:3]}; set `format`")
    return exts.pop()


def _no_rows(path: Path, fmt: str) -> bool:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows == 0
        except Exception:  # noqa: BLE001 - not readable as Parquet: let `datasets` say why
            return False
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return len(lines) <= (1 if fmt == "csv" else 0)  # a CSV header alone has no rows


def load_table(name: str, src: DataSource):
    """The source as a `datasets.Dataset`, before mapping. Errors name the source."""
    import datasets

    try:
        if src.hub:
            return datasets.load_dataset(src.hub, src.config, split=src.split, revision=src.revision)
        files = [src.path] if _is_url(src.path) else [str(f) for f in local_files(src)]
        fmt = _format(src, files)
        if not _is_url(src.path) and all(_no_rows(Path(f), fmt) for f in files):
            raise DataError(f"data.{name}: {src.path} has no rows")  # `datasets` fails on it less clearly
        return datasets.load_dataset(fmt, data_files=files, split="train")
    except DataError:
        raise
    except Exception as e:
        what = f"hub dataset {src.hub!r} (config {src.config!r}, split {src.split!r}, revision {src.revision!r})" \
            if src.hub else src.path
        raise DataError(f"data.{name}: cannot load {what}: {type(e).__name__}: {e}") from e


def _column(name: str, src: DataSource, table, field: str, column: str) -> None:
    if column not in table.column_names:
        close = difflib.get_close_matches(column, table.column_names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(f"data.{name}: {src.label()} has no column {column!r} (columns.{field}){hint} "
                        f"Columns: {table.column_names}")


def _level(v) -> int:
    m = re.search(r"\d+", str(v)) if v is not None else None
    return int(m.group()) if m else 0


def _gsm8k(answer: str) -> tuple[str, str]:
    """GSM8K's answer field: the worked solution, then `#### 72`; -> (72, solution)."""
    if "####" in answer:
        sol, _, gold = answer.rpartition("####")
        return gold.strip().replace(",", ""), sol.strip()
    return answer.strip(), ""


def _problem_row(name: str, src: DataSource, r: dict, i: int) -> dict:
    c, meta = src.columns, {"verifier": src.verifier, "source": name}
    if src.verifier == "countdown":
        numbers, target = list(r[c.numbers]), r[c.target]
        meta |= {"numbers": [int(n) for n in numbers], "target": int(target)}
        question = r[c.problem] if c.problem else COUNTDOWN_QUESTION.format(numbers=numbers, target=target)
        answer, solution = str(target), ""
    elif src.verifier == "multiple_choice":
        options = [str(r[c.correct]).strip(), *(str(r[col]).strip() for col in c.incorrect)]
        rng = random.Random(f"{src.seed}|{r[c.id] if c.id else r[c.problem]}")
        order = list(range(len(options)))
        rng.shuffle(order)
        meta["options"] = [options[j] for j in order]
        answer = verifiers.LETTERS[order.index(0)]
        question = str(r[c.problem]).strip() + "\n\n" + "\n".join(
            f"{verifiers.LETTERS[k]}) {o}" for k, o in enumerate(meta["options"]))
        solution = ""
    else:
        question = str(r[c.problem])
        solution = str(r[c.solution]) if c.solution and r.get(c.solution) is not None else ""
        if c.answer and r.get(c.answer) is not None:
            answer, worked = _gsm8k(str(r[c.answer]))
            solution = solution or worked
        else:
            box = verifiers.boxed(solution)
            answer = box[-1] if box else ""
    ident = str(r[c.id]) if c.id else hashlib.sha256(f"{name}|{question}".encode()).hexdigest()[:16]
    return {"id": ident, "family": name, "level": _level(r.get(c.level)) if c.level else 0, "kind": "reasoning",
            "notation": "", "question": question, "answer": answer, "solution": solution, "split": "import",
            "meta": json.dumps(meta, sort_keys=True)}


def _sft_row(name: str, src: DataSource, r: dict, i: int) -> dict:
    c = src.columns
    if c.messages:
        messages = [{"role": m["role"], "content": m["content"]} for m in r[c.messages]]
        last = max((k for k, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None or not any(m["role"] == "user" for m in messages[:last]):
            raise DataError(f"data.{name}: row {i} of {src.label()}: column {c.messages!r} has no user turn "
                            f"followed by an assistant turn")
        messages = messages[:last + 1]
        question = next(m["content"] for m in reversed(messages[:last]) if m["role"] == "user")
        response = messages[last]["content"]
    else:
        question, response = str(r[c.prompt]), str(r[c.completion])
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": response}]
    ident = str(r[c.id]) if c.id else hashlib.sha256(json.dumps(messages).encode()).hexdigest()[:16]
    return {"problem_id": ident, "family": name, "kind": "reasoning", "notation": "", "question": question,
            "response": response, "source": name, "messages": json.dumps(messages)}


def _gold_ok(row: dict) -> bool:
    meta = json.loads(row["meta"])
    kind = meta["verifier"]
    if kind == "math":
        return verifiers.math_gold_ok(row["answer"])
    if kind == "multiple_choice":
        return verifiers.mc_gold_ok(row["answer"], meta)
    if kind == "countdown":
        return verifiers.countdown_gold_ok(meta)
    return bool(row["answer"].strip())  # exact, or a user function: any non-empty answer


def load(name: str, src: DataSource, planned: dict | None = None) -> tuple[list[dict], dict]:
    """(rows, card) of a source: loaded, filtered, sampled, mapped and checked. `planned` is the
    `fingerprint` the import's cache key was computed with; a file that differs now fails."""
    if planned is not None and isinstance(planned.get("files"), dict):  # local files (a URL's are a list)
        now = fingerprint(src)["files"]
        changed = [f for f, h in planned["files"].items() if now.get(f) != h]
        if changed:
            raise DataError(f"data.{name}: {changed[0]} changed after this run was planned (sha256 differs); "
                            "run again to import the new contents")
    table = load_table(name, src)
    where = src.label() + (f" split {src.split!r}" if src.hub else "")
    if table.num_rows == 0:
        raise DataError(f"data.{name}: {where} has no rows")
    for field, column in src.columns.used():
        _column(name, src, table, field, column)
    for column in src.where:
        _column(name, src, table, "where", column)
    if src.rows is not None:
        start, stop = src.rows
        if not 0 <= start < stop <= table.num_rows:
            raise DataError(f"data.{name}: rows {list(src.rows)} outside the {table.num_rows} rows of {where}")
        table = table.select(range(start, stop))
    rows = table.to_list()
    n_loaded = len(rows)
    if src.where:
        rows = [r for r in rows if all(r[col] in allowed for col, allowed in src.where.items())]
        if not rows:
            raise DataError(f"data.{name}: no rows of {where} pass `where` {src.where}")
    n_where = len(rows)
    if src.sample and src.sample < len(rows):
        rows = random.Random(src.seed).sample(rows, src.sample)
    make = _sft_row if src.use == "sft" else _problem_row
    out = [make(name, src, r, i) for i, r in enumerate(rows)]
    key = "problem_id" if src.use == "sft" else "id"
    dups = sorted(_duplicates([r[key] for r in out]))
    repeated = 0
    if dups and src.columns.id:
        raise DataError(f"data.{name}: {len(dups)} duplicate ids in column {src.columns.id!r} of {where}, "
                        f"e.g. {dups[:3]}")
    if dups:  # no id column: the id is the question's hash, and a repeated question is kept once
        firsts = {r[key]: r for r in reversed(out)}
        repeated, out = len(out) - len(firsts), [r for r in out if firsts.get(r[key]) is r]
    card = {"data_source": name, "from": where, "use": src.use, "rows_loaded": n_loaded, "rows": len(out),
            "removed_by_where": n_loaded - n_where, "repeated_questions_dropped": repeated}
    if src.use == "prompts":
        bad = [r for r in out if not _gold_ok(r)]
        share = len(bad) / len(out)
        if share > src.max_unparsable:
            col = src.columns.answer or src.columns.solution or src.columns.target or src.columns.correct
            raise DataError(f"data.{name}: {len(bad)} of {len(out)} gold answers ({share:.1%}) in column {col!r} of "
                            f"{where} cannot be parsed by verifier {src.verifier!r} (max_unparsable="
                            f"{src.max_unparsable}); e.g. {[b['answer'] for b in bad[:3]]}")
        card |= {"verifier": src.verifier, "unparsable_answers": len(bad)}
    return out, card


def _duplicates(values: list[str]) -> set[str]:
    seen, dup = set(), set()
    for v in values:
        (dup if v in seen else seen).add(v)
    return dup
