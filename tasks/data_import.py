"""Stage 0b `data_import`: one of your data sources (the recipe's `data:`, data/sources.py) loaded,
mapped, checked and written as an artifact: `prompts.parquet` (use: prompts) or `samples.parquet`
(use: sft), with `card.md`. One node per source, `data:NAME`. Its cache key covers the source's
config and the sha256 of every local file (or a hub dataset's id, config, split and revision), so a
changed file is imported again and everything trained on it is recomputed.

A training source's parents are the run's benchmark sources (role `benchmark:NAME`): the import counts
the rows that share an n-gram with each benchmark (data/decontaminate.py) and, with
`decontaminate: drop`, removes them.
"""

from __future__ import annotations

from r1flow.data import decontaminate, sources
from r1flow.data.schemas import read_rows, write_rows
from r1flow.data.store import ArtifactRef, ArtifactStore
from r1flow.tasks.common import BuildContext, Node, log, publish_markdown


def card_markdown(name: str, src: sources.DataSource, card: dict, examples: list[dict]) -> str:
    rows = "".join(f"| {k} | {v} |\n" for k, v in card.items() if not isinstance(v, (dict, list)))
    dec = card.get("contamination") or {}
    dec_md = "".join(f"| {b} | {n} |\n" for b, n in dec.items())
    text = "question"
    ex = "".join(f"| {str(e.get('id', e.get('problem_id')))[:16]} | {' '.join(str(e[text]).split())[:120]} | "
                 f"{' '.join(str(e.get('answer', e.get('response', ''))).split())[:60]} |\n" for e in examples)
    return (f"# Imported data: {name}\n\nFrom `{src.label()}`, use: {src.use}\n\n| | |\n|---|---|\n{rows}\n"
            + (f"## Overlap with benchmarks ({src.ngram}-grams; decontaminate: {src.decontaminate})\n\n"
               f"| benchmark | training rows sharing an n-gram |\n|---|---|\n{dec_md}\n" if dec else "")
            + f"## First rows\n\n| id | question | answer |\n|---|---|---|\n{ex}")


def build_import(b: BuildContext) -> None:
    src: sources.DataSource = b.node.config
    name = b.node.record["name"]
    rows, card = sources.load(name, src, planned=b.node.record["fingerprint"])
    key = "problem_id" if src.use == "sft" else "id"
    bench = {role.split(":", 1)[1]: read_rows(ref.file("prompts.parquet"), "prompts")
             for role, ref in b.parents.items() if role.startswith("benchmark:")}
    if bench:
        hits = decontaminate.overlaps(rows, bench, src.ngram, key=key)
        card["contamination"] = {bn: len(ids) for bn, ids in hits.items()}
        if src.decontaminate == "drop":
            bad = set().union(*map(set, hits.values()))
            rows = [r for r in rows if r[key] not in bad]
            card["dropped_as_contaminated"] = len(bad)
            if not rows:
                raise sources.DataError(f"data.{name}: every row overlaps a benchmark ({card['contamination']}); "
                                        "nothing is left to train on")
        for bn, n in card["contamination"].items():
            log(f"[data:{name}] {n} rows share a {src.ngram}-gram with benchmark {bn}")
    card["rows"] = len(rows)
    file, schema = sources.IMPORT_FILES[src.use]
    write_rows(rows, b.out / file, schema)
    (b.out / "card.md").write_text(card_markdown(name, src, card, rows[:5]))
    b.summary |= card
    log(f"[data:{name}] {len(rows)} rows from {card['from']}")


def show_import(store: ArtifactStore, node: Node, ref: ArtifactRef) -> None:
    publish_markdown(f"r1flow-data-{node.record['name']}-card", ref.file("card.md").read_text(),
                     f"Imported data **{node.record['name']}** (artifact `{ref.id[:12]}`)")

