# pytest tests/test_sources.py -q
"""Bring your own data (data/sources.py): every public schema the README names is imported with its
mapping and its gold answers pass their own verifier; bad data fails before any training with the
file and the column named; decontamination finds the overlap."""

from __future__ import annotations

import json
from pathlib import Path

import public_schemas as ps
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from r1flow.data import decontaminate, sources
from r1flow.data.sources import DataError, DataSource
from r1flow.data.verify import extract_answer, verify

from r1flow.recipe import RecipeError, load_recipe


def src(path: Path, **kw) -> DataSource:
    return DataSource(path=str(path), **kw)


def gold_verifies(row: dict, answer: str) -> bool | None:
    return verify(extract_answer(f"<think> x </think> <answer> {answer} </answer>", row), row)


def test_gsm8k(tmp_path):
    rows, card = sources.load("gsm8k", src(ps.gsm8k(tmp_path / "g.parquet"), columns={"problem": "question",
                                                                                     "answer": "answer"}))
    assert card["rows"] == 16 and card["unparsable_answers"] == 0
    r = rows[0]
    assert r["answer"].isdigit() and "####" not in r["answer"] and "<<" in r["solution"]  # cut at ####
    assert gold_verifies(r, r["answer"]) and not gold_verifies(r, str(int(r["answer"]) + 1))
    assert json.loads(r["meta"])["verifier"] == "math" and r["split"] == "import" and r["family"] == "gsm8k"


def test_math_level_filter_and_boxed_answer(tmp_path):
    s = src(ps.math(tmp_path / "math.jsonl"), columns={"problem": "problem", "solution": "solution", "level": "level"},
            where={"level": ["Level 3", "Level 4", "Level 5"]})
    rows, card = sources.load("math", s)
    assert {r["level"] for r in rows} == {3, 4, 5} and card["removed_by_where"] == 16 - len(rows)
    assert all(gold_verifies(r, r["answer"]) for r in rows)


@pytest.mark.parametrize("writer,columns", [(ps.math500, {"problem": "problem", "answer": "answer",
                                                          "id": "unique_id"}),
                                            (ps.aime, {"problem": "problem", "answer": "answer", "id": "id"})])
def test_math500_and_aime(tmp_path, writer, columns):
    rows, _ = sources.load("bench", src(writer(tmp_path / "b.jsonl"), columns=columns))
    assert all(gold_verifies(r, r["answer"]) for r in rows)
    if writer is ps.math500:  # a fraction, also accepted as a decimal
        r = rows[0]
        num, den = r["answer"].removeprefix("\\frac{").removesuffix("}").split("}{")
        assert gold_verifies(r, str(int(num) / int(den)))


def test_gpqa_options_are_shuffled_and_checked(tmp_path):
    cols = {"problem": "Question", "correct": "Correct Answer", "id": "Record ID",
            "incorrect": ["Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]}
    rows, _ = sources.load("gpqa", src(ps.gpqa(tmp_path / "gpqa.csv"), columns=cols, verifier="multiple_choice"))
    letters = {r["answer"] for r in rows}
    assert len(letters) > 1  # the correct option is not always in the same place
    for r in rows:
        options = json.loads(r["meta"])["options"]
        correct = options["ABCD".index(r["answer"])]
        assert f"{r['answer']}) {correct}" in r["question"]
        assert gold_verifies(r, r["answer"]) and gold_verifies(r, correct)
        wrong = next(x for x in "ABCD" if x != r["answer"])
        assert gold_verifies(r, wrong) is False
    again, _ = sources.load("gpqa", src(tmp_path / "gpqa.csv", columns=cols, verifier="multiple_choice"))
    assert again == rows  # seeded


def test_countdown(tmp_path):
    rows, _ = sources.load("cd", src(ps.countdown(tmp_path / "cd.parquet"), verifier="countdown",
                                     columns={"numbers": "nums", "target": "target"}))
    for r in rows:
        m = json.loads(r["meta"])
        a, b, c = m["numbers"]
        assert "create an equation that equals" in r["question"]
        assert gold_verifies(r, f"{a} * {b} - {c}") and not gold_verifies(r, f"{a} * {b} + {c} + 1")


def test_openr1_messages_become_sft_rows(tmp_path):
    rows, card = sources.load("openr1", src(ps.openr1(tmp_path / "o.jsonl"), use="sft",
                                            columns={"messages": "messages", "id": "uuid"}))
    r = rows[0]
    messages = json.loads(r["messages"])
    assert [m["role"] for m in messages] == ["user", "assistant"] and r["response"] == messages[-1]["content"]
    assert card["rows"] == 16 and "unparsable_answers" not in card


# ---- bad data ---------------------------------------------------------------------------------------------
def test_misspelled_column_is_named_with_a_suggestion(tmp_path):
    s = src(ps.gsm8k(tmp_path / "g.parquet"), columns={"problem": "questoin", "answer": "answer"})
    with pytest.raises(DataError, match=r"g.parquet has no column 'questoin' \(columns.problem\); did you mean "
                                        r"'question'\?"):
        sources.load("gsm8k", s)


def test_empty_file_and_empty_filter(tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"question": pa.array([], pa.string()), "answer": pa.array([], pa.string())}), empty)
    with pytest.raises(DataError, match="empty.parquet has no rows"):
        sources.load("e", src(empty, columns={"problem": "question", "answer": "answer"}))
    s = src(ps.math(tmp_path / "m.jsonl"), columns={"problem": "problem", "solution": "solution"},
            where={"level": ["Level 9"]})
    with pytest.raises(DataError, match=r"no rows of .*m.jsonl pass `where`"):
        sources.load("m", s)


def test_unparsable_answers_are_counted_against_the_threshold(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = [{"problem": f"q{i}", "answer": str(i)} for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in good + [{"problem": "q8", "answer": "\\frac{"},
                                                                   {"problem": "q9", "answer": "???"}]))
    cols = {"problem": "problem", "answer": "answer"}
    with pytest.raises(DataError, match=r"2 of 10 gold answers \(20.0%\) in column 'answer' of .*bad.jsonl cannot "
                                        r"be parsed by verifier 'math'"):
        sources.load("b", src(path, columns=cols))
    rows, card = sources.load("b", src(path, columns=cols, max_unparsable=0.25))
    assert card["unparsable_answers"] == 2 and len(rows) == 10


def test_duplicate_ids(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text("".join(json.dumps({"id": i % 3, "problem": f"q{i % 4}", "answer": "1"}) + "\n" for i in range(5)))
    with pytest.raises(DataError, match=r"2 duplicate ids in column 'id' of .*dup.jsonl, e.g. \['0', '1'\]"):
        sources.load("d", src(path, columns={"problem": "problem", "answer": "answer", "id": "id"}))
    # Without an id column a problem is its question: a repeated question is kept once, and counted.
    rows, card = sources.load("d", src(path, columns={"problem": "problem", "answer": "answer"}))
    assert [r["question"] for r in rows] == ["q0", "q1", "q2", "q3"] and card["repeated_questions_dropped"] == 1


def test_unknown_verifier_fails_at_config():
    with pytest.raises(ValueError, match="verifier 'regexp': not one of"):
        DataSource(path="x.jsonl", columns={"problem": "p", "answer": "a"}, verifier="regexp")


def test_unreachable_hub_id_is_named(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    s = DataSource(hub="no-such-org/no-such-dataset", config="main", columns={"problem": "q", "answer": "a"})
    with pytest.raises(DataError, match=r"data.gsm8k: cannot load hub dataset 'no-such-org/no-such-dataset' "
                                        r"\(config 'main', split 'train', revision None\)"):
        sources.load("gsm8k", s)


def test_file_changed_after_planning(tmp_path):
    s = src(ps.gsm8k(tmp_path / "g.parquet"), columns={"problem": "question", "answer": "answer"})
    planned = sources.fingerprint(s)
    ps.gsm8k(tmp_path / "g.parquet", seed=7)  # new contents
    assert sources.fingerprint(s) != planned
    with pytest.raises(DataError, match=r"g.parquet changed after this run was planned"):
        sources.load("gsm8k", s, planned=planned)


def _recipe(tmp_path, data: dict, **sections) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "data": data, **sections}))
    return path


def test_recipe_checks_names_uses_and_paths(tmp_path):
    g = str(ps.gsm8k(tmp_path / "g.parquet"))
    gsm = {"path": g, "columns": {"problem": "question", "answer": "answer"}}
    with pytest.raises(RecipeError, match=r"r1_zero.datasets.0: no source 'gsm' in `data:` \(sources: "
                                          r"\['gsm8k'\]\)"):
        load_recipe(_recipe(tmp_path, {"gsm8k": gsm}, r1_zero={"datasets": ["gsm"]}))
    with pytest.raises(RecipeError, match="source 'gsm8k' has use: prompts, this field needs sft"):
        load_recipe(_recipe(tmp_path, {"gsm8k": gsm}, sft_cold={"datasets": ["gsm8k"]}))
    with pytest.raises(RecipeError, match=r"\['gsm8k'\] are both trained on and benchmarks"):
        load_recipe(_recipe(tmp_path, {"gsm8k": gsm}, r1_zero={"datasets": ["gsm8k"]},
                            evaluate={"benchmarks": [{"data": "gsm8k"}]}))
    with pytest.raises(RecipeError, match=r"data.gsm8k.path: no such file or directory: .*nope.parquet"):
        load_recipe(_recipe(tmp_path, {"gsm8k": gsm | {"path": str(tmp_path / "nope.parquet")}}))
    with pytest.raises(RecipeError, match="data.add: the name is taken by the generated world"):
        load_recipe(_recipe(tmp_path, {"add": gsm}))


def test_import_key_follows_the_file(tmp_path):
    from r1flow.stages import STAGES

    g = ps.gsm8k(tmp_path / "g.parquet")
    path = _recipe(tmp_path, {"gsm8k": {"path": str(g), "columns": {"problem": "question", "answer": "answer"}}},
                   r1_zero={"datasets": ["gsm8k"]})
    [before] = STAGES["data_import"].nodes(load_recipe(path))
    ps.gsm8k(g, seed=9)
    [after] = STAGES["data_import"].nodes(load_recipe(path))
    assert before.record["fingerprint"] != after.record["fingerprint"]
    [rl] = STAGES["r1_zero"].nodes(load_recipe(path))
    assert rl.parents == {"policy": "pretrain", "data:gsm8k": "data:gsm8k"}  # no world prompts


def test_decontamination_finds_shared_ngrams():
    train = [{"id": "a", "question": "Natalia had 3 clips and sold 4 more. How many clips did she sell?"},
             {"id": "b", "question": "What is the capital of France?"}]
    bench = {"gsm": [{"question": "natalia had 3 clips and sold 4 more, how many clips"}],
             "other": [{"question": "Compute 2+2."}]}
    assert decontaminate.overlaps(train, bench, n=8) == {"gsm": ["a"], "other": []}
    assert decontaminate.overlaps(train, {"short": [{"question": "the capital of France"}]}, n=8) == {"short": []}
    assert decontaminate.overlaps(train, {"short": [{"question": "What is the capital of France"}]}, n=4) == \
        {"short": ["b"]}


def test_prompt_templates():
    from r1flow.data.templates import R1_ZERO_SYSTEM, check_template, render_prompt

    class Tok:  # records what the chat template is given
        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            assert add_generation_prompt and not tokenize
            return "|".join(f"{m['role']}:{m['content']}" for m in messages)

    q = "What is $\\frac{1}{2}$?"
    assert render_prompt(q, "reasoning", Tok()) == f"system:{R1_ZERO_SYSTEM}|user:{q}"
    assert render_prompt(q, "reasoning", Tok(), "chat") == f"user:{q}"
    own = "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    assert render_prompt(q, "reasoning", Tok(), own) == own.replace("{question}", q)  # verbatim, braces kept
    assert render_prompt("copy this", "instruction", Tok(), own) == "user:copy this"  # instruction tasks: plain
    with pytest.raises(ValueError, match="has no {question} placeholder"):
        check_template("Solve it.")


def test_a_template_without_placeholder_fails_at_validation(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("r1_zero: {template: 'Solve it.'}\n")
    with pytest.raises(RecipeError, match=r"r1_zero.template: .*has no \{question\} placeholder"):
        load_recipe(p)


def test_decontaminate_drop_removes_the_overlap(tmp_path):
    from r1flow.data.store import ArtifactStore
    from r1flow.tasks.common import BuildContext, Node
    from r1flow.tasks.data_import import build_import

    train = tmp_path / "train.jsonl"
    rows = [{"problem": "Natalia had 3 clips and sold 4 more. How many clips did she sell in all?", "answer": "7"},
            {"problem": "A farmer has 12 cows and buys 30 more. How many cows are there now?", "answer": "42"}]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    pq.write_table(pa.Table.from_pylist([{"id": "b0", "family": "b", "level": 0, "kind": "reasoning",
                                          "notation": "", "question": "natalia had 3 clips and sold 4 more today",
                                          "answer": "7", "solution": "", "split": "import", "meta": "{}"}]),
                   bench_dir / "prompts.parquet")

    class Ref:
        path = str(bench_dir)

        def file(self, name):
            return bench_dir / name

    for mode, kept in (("report", 2), ("drop", 1)):
        src = DataSource(path=str(train), columns={"problem": "problem", "answer": "answer"}, decontaminate=mode)
        out = tmp_path / mode
        out.mkdir()
        node = Node("data:train", "data_import", src, {"benchmark:b": "data:b"},
                    record={"name": "train", "fingerprint": sources.fingerprint(src)})
        summary: dict = {}
        build_import(BuildContext(node, {"benchmark:b": Ref()}, out, summary, tmp_path / "w", ArtifactStore(str(tmp_path / "s"))))
        assert summary["contamination"] == {"b": 1} and summary["rows"] == kept
        assert pq.read_table(out / "prompts.parquet").num_rows == kept
        assert "| b | 1 |" in (out / "card.md").read_text()


def test_an_fsspec_url_source_loads_and_is_keyed_by_what_the_filesystem_reports():
    """Remote sources go through fsspec (s3://, gs://, https://); memory:// stands in for them here."""
    import fsspec

    fs = fsspec.filesystem("memory")

    def write(n: int) -> None:
        with fs.open("/byod-test/g.jsonl", "w") as f:
            f.write("".join(json.dumps({"question": f"q{i}", "answer": f"so #### {i}"}) + "\n" for i in range(n)))

    write(3)
    s = DataSource(path="memory://byod-test/g.jsonl", columns={"problem": "question", "answer": "answer"})
    before = sources.fingerprint(s)
    rows, card = sources.load("g", s)
    assert [r["answer"] for r in rows] == ["0", "1", "2"] and card["from"] == "memory://byod-test/g.jsonl"
    write(4)
    assert sources.fingerprint(s) != before  # the size changed, so the import's key does
    fs.rm("/byod-test/g.jsonl")
