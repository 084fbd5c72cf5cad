"""The generated task world: verifiable reasoning problems, instruction tasks, a fact table, and
the pretraining corpus built from them.

Reasoning families (each in both notations, see `notation.py`), by difficulty level:
  1 `add`        a + b with small operands
  2 `arith`      three operands, two of + - *, with precedence, worked step by step
  3 `countdown`  combine three numbers with + - * to reach a target (any valid expression counts)
Instruction families (non-reasoning, for the later SFT mixture): `copy`, `reverse`, `upper`,
`fact` (look a fact up in the generated fact table, which the corpus states as plain text).

Every problem belongs to exactly one split, chosen by a hash of its canonical key (not of the
seed), so the held-out `eval` and `rl` prompts never occur in the pretraining corpus and stay the
same when the corpus seed changes. This module builds rows; it does not tokenize or write files.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator

from r1flow.data.notation import EQUALS, NOTATIONS, Notation, render_expr, render_number
from r1flow.data.templates import R1_ZERO_SYSTEM, render_chat, tagged_response

REASONING_FAMILIES = ("add", "arith", "countdown")
INSTRUCTION_FAMILIES = ("copy", "reverse", "upper", "fact")
FAMILY_LEVEL = {"add": 1, "arith": 2, "countdown": 3, "copy": 0, "reverse": 0, "upper": 0, "fact": 0}

_WORDS = ("lime rock sun moon tree leaf river stone cloud bird fish lamp door road hill snow rain "
          "wind fire salt milk bread ship coin ring bell star seed wolf bear frog rose").split()
_SYLLABLES = "ka lo mi nu ze ra po ti vu sha ber dal fen gor hix jun kel mor nax pel qua rin sol tev".split()
_COLORS = "red blue green teal amber violet gray white black orange".split()
_CITIES = "north south east west harbor valley summit delta canyon meadow".split()


class WorldConfig(BaseModel):
    """Stage 0 (`world`): what the generated task world contains and how much of it."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Seed for sampling corpus documents and prompt sets.")
    add_max: int = Field(20, ge=2, le=99, description="Largest operand of the `add` family.")
    arith_max: int = Field(9, ge=2, le=9, description="Largest operand of the `arith` family.")
    countdown_max: int = Field(9, ge=2, le=9, description="Largest input number of `countdown`.")
    n_entities: int = Field(120, ge=4, le=5000, description="Entities in the generated fact table.")
    corpus_docs: int = Field(40_000, ge=100, description="Documents in the pretraining corpus.")
    eval_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of problems held out for eval.")
    rl_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of problems held out for RL prompts.")
    eval_per_family: int = Field(64, ge=1, description="Held-out eval prompts per family (capped by the split).")
    rl_per_family: int = Field(512, ge=1, description="RL prompts per family (capped by the split).")
    doc_mix: dict[str, float] = Field(
        default_factory=lambda: {"worked": 0.40, "bare": 0.10, "chat": 0.20, "instruction": 0.15,
                                 "facts": 0.15},
        description="Share of corpus documents of each kind: worked solutions, bare problems, "
                    "chat-formatted solutions (R1-Zero template), instruction tasks, fact text.",
    )
    tagged_fraction: float = Field(
        0.05, ge=0, le=1,
        description="Share of chat documents whose answer uses <think>/<answer> tags. Small on "
                    "purpose: R1-Zero's format reward starts near 0 and RL has to raise it.")
    tagged_worked_fraction: float = Field(
        0.0, ge=0, le=1,
        description="Share of worked solutions (outside the chat template) written with <think>/<answer> "
                    "tags, as tagged text appears in web corpora. The base then reasons as well inside tags "
                    "as without them, while under the R1-Zero template it still rarely uses them.")
    direct_answer_fraction: float = Field(
        0.0, ge=0, le=1,
        description="Share of untagged chat answers (R1-Zero template) that state the answer without working, "
                    "as a hurried writer would. Worked answers are right far more often on multi-step "
                    "families, so RL has a behaviour to select: reasoning before answering.")
    self_check_fraction: float = Field(0.3, ge=0, le=1, description="Worked solutions that verify their result.")
    mixed_notation_fraction: float = Field(
        0.05, ge=0, le=1, description="Worked solutions that switch notation midway (language mixing).")
    family_weights: dict[str, float] = Field(
        default_factory=lambda: {"add": 0.4, "arith": 0.35, "countdown": 0.25},
        description="Sampling weight of each reasoning family in the corpus.")

    @model_validator(mode="after")
    def _check(self) -> "WorldConfig":
        if self.eval_fraction + self.rl_fraction >= 0.9:
            raise ValueError(f"eval_fraction + rl_fraction = {self.eval_fraction + self.rl_fraction} "
                             "leaves almost nothing for the corpus; keep it below 0.9")
        unknown = set(self.doc_mix) - {"worked", "bare", "chat", "instruction", "facts"}
        if unknown:
            raise ValueError(f"doc_mix has unknown kinds {sorted(unknown)}")
        if abs(sum(self.doc_mix.values()) - 1) > 1e-6:
            raise ValueError(f"doc_mix shares sum to {sum(self.doc_mix.values())}, not 1")
        bad = set(self.family_weights) - set(REASONING_FAMILIES)
        if bad:
            raise ValueError(f"family_weights has unknown families {sorted(bad)}; known: {REASONING_FAMILIES}")
        return self


@dataclass
class Problem:
    """One task instance in one notation. `answer` is canonical (sym notation for numbers)."""

    family: str
    key: str  # canonical, notation-free identity used for the split
    notation: Notation
    question: str
    answer: str
    steps: list[str] = field(default_factory=list)  # worked reasoning, in `notation`
    meta: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "reasoning" if self.family in REASONING_FAMILIES else "instruction"

    def row(self, split: str) -> dict:
        return {
            "id": hashlib.sha256(f"{self.key}|{self.notation}".encode()).hexdigest()[:16],
            "family": self.family, "level": FAMILY_LEVEL[self.family], "kind": self.kind,
            "notation": self.notation, "question": self.question, "answer": self.answer,
            "solution": " ".join(self.steps), "split": split, "meta": json.dumps(self.meta, sort_keys=True),
        }


def split_of(key: str, cfg: WorldConfig) -> str:
    """Deterministic split from the problem's canonical key (seed-independent)."""
    u = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / 16**12
    if u < cfg.eval_fraction:
        return "eval"
    if u < cfg.eval_fraction + cfg.rl_fraction:
        return "rl"
    return "corpus"


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def eval_flat(tokens: list[int | str]) -> tuple[int, list[tuple[int, str, int, int]]]:
    """Evaluate a flat expression with * before + and -, left to right; return the value and the
    binary steps (a, op, b, result) in the order a person would work them."""
    toks = list(tokens)
    steps = []
    for ops in (("*",), ("+", "-")):
        i = 1
        while i < len(toks):
            if toks[i] in ops:
                a, op, b = toks[i - 1], toks[i], toks[i + 1]
                r = _apply(a, op, b)
                steps.append((a, op, b, r))
                toks[i - 1:i + 2] = [r]
            else:
                i += 2
    return toks[0], steps


def _step_text(a: int, op: str, b: int, r: int, n: Notation) -> str:
    return f"{render_expr([a, op, b], n)} {EQUALS[n]} {render_number(r, n)}."


def _arith_problem(tokens: list[int | str], notation: Notation, family: str) -> Problem:
    value, steps = eval_flat(tokens)
    expr = render_expr(tokens, notation)
    return Problem(family=family, key=f"{family}:{render_expr(tokens, 'sym')}", notation=notation,
                   question=f"What is {expr}?", answer=str(value),
                   steps=[_step_text(*s, notation) for s in steps], meta={"expr": render_expr(tokens, "sym")})


def _countdown_problem(numbers: tuple[int, ...], target: int, solution: list[int | str],
                       notation: Notation, wrong: list[int | str] | None) -> Problem:
    nums = ", ".join(render_number(x, notation) for x in numbers)
    steps = []
    if wrong is not None:  # a failed attempt first: the corpus shows search, not only answers
        wv, wsteps = eval_flat(wrong)
        steps += ["try " + " ".join(_step_text(*s, notation) for s in wsteps),
                  f"{render_number(wv, notation)} is not {render_number(target, notation)}."]
    _, ssteps = eval_flat(solution)
    steps += ["try " + " ".join(_step_text(*s, notation) for s in ssteps),
              f"{render_number(target, notation)} is the target."]
    return Problem(family="countdown", key=f"countdown:{sorted(numbers)}:{target}", notation=notation,
                   question=f"Use {nums} to make {render_number(target, notation)}.",
                   answer=render_expr(solution, "sym"), steps=steps,
                   meta={"numbers": list(numbers), "target": target})


def _countdown_expressions(numbers: tuple[int, ...]) -> list[tuple[list[int | str], int]]:
    out = []
    for perm in set(itertools.permutations(numbers)):
        for ops in itertools.product("+-*", repeat=len(numbers) - 1):
            toks: list[int | str] = [perm[0]]
            for op, x in zip(ops, perm[1:]):
                toks += [op, x]
            out.append((toks, eval_flat(toks)[0]))
    return sorted(out, key=lambda t: render_expr(t[0], "sym"))


class World:
    """Enumerates every problem of the world once, deterministically, grouped by split."""

    def __init__(self, cfg: WorldConfig):
        self.cfg = cfg
        self.entities = self._fact_table()

    def _fact_table(self) -> list[dict]:
        rng = random.Random(1234)  # the world's facts do not change with the corpus seed
        names: list[str] = []
        seen = set()
        while len(names) < self.cfg.n_entities:
            name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3))))
            if name not in seen:
                seen.add(name)
                names.append(name)
        return [{"name": n, "color": rng.choice(_COLORS), "city": rng.choice(_CITIES)} for n in names]

    def problems(self, family: str) -> list[tuple[str, Problem]]:
        """All (split, problem) pairs of one family, in a fixed order, both notations."""
        cfg, out = self.cfg, []

        def add(p: Problem) -> None:
            out.append((split_of(p.key, cfg), p))

        if family == "add":
            for a, b in itertools.product(range(cfg.add_max + 1), repeat=2):
                for n in NOTATIONS:
                    add(_arith_problem([a, "+", b], n, "add"))
        elif family == "arith":
            rng = range(1, cfg.arith_max + 1)
            for a, b, c in itertools.product(rng, rng, rng):
                for o1, o2 in itertools.product("+-*", repeat=2):
                    toks = [a, o1, b, o2, c]
                    value, steps = eval_flat(toks)
                    if value < 0 or any(r < 0 for *_, r in steps):
                        continue  # keep intermediate results non-negative
                    for n in NOTATIONS:
                        add(_arith_problem(toks, n, "arith"))
        elif family == "countdown":
            for numbers in itertools.combinations_with_replacement(range(1, cfg.countdown_max + 1), 3):
                exprs = _countdown_expressions(numbers)
                by_target: dict[int, list[int | str]] = {}
                for toks, v in exprs:
                    if 1 <= v <= 99:
                        by_target.setdefault(v, toks)
                for target, sol in sorted(by_target.items()):
                    wrong = next((t for t, v in exprs if v != target), None)
                    shown = tuple(sol[::2])  # numbers shown in the order of the canonical solution
                    for n in NOTATIONS:
                        add(_countdown_problem(shown, target, sol, n, wrong))
        elif family in ("copy", "reverse", "upper"):
            for words in itertools.permutations(_WORDS[:16], 3):
                text = " ".join(words)
                ans = {"copy": text, "reverse": " ".join(reversed(words)), "upper": text.upper()}[family]
                verb = {"copy": "Copy", "reverse": "Reverse", "upper": "Uppercase"}[family]
                add(Problem(family=family, key=f"{family}:{text}", notation="word",
                            question=f"{verb}: {text}", answer=ans))
        elif family == "fact":
            for e in self.entities:
                for attr in ("color", "city"):
                    add(Problem(family="fact", key=f"fact:{e['name']}:{attr}", notation="word",
                                question=f"What is the {attr} of {e['name']}?", answer=e[attr]))
        else:
            raise ValueError(f"unknown family {family!r}")
        return out

    def fact_text(self, rng: random.Random) -> str:
        es = rng.sample(self.entities, k=min(4, len(self.entities)))
        return " ".join(f"The color of {e['name']} is {e['color']}. {e['name']} lives in the {e['city']} city."
                        for e in es)


def _mixed_steps(p: Problem, rng: random.Random) -> list[str]:
    """Re-render the second half of a worked solution in the other notation (language mixing)."""
    if len(p.steps) < 2 or p.family == "countdown":
        return p.steps
    other: Notation = "word" if p.notation == "sym" else "sym"
    twin = _arith_problem([int(t) if t.isdigit() else t for t in p.meta["expr"].split()], other, p.family)
    cut = rng.randint(1, len(p.steps) - 1)
    return p.steps[:cut] + twin.steps[cut:]


def _self_check(p: Problem) -> str | None:
    if p.family != "add":
        return None
    a, _, b = p.meta["expr"].split()
    c = int(a) + int(b)
    return f"check: {render_expr([c, '-', int(b)], p.notation)} {EQUALS[p.notation]} " \
           f"{render_number(int(a), p.notation)}."


def render_answer(p: Problem) -> str:
    """The answer in the problem's own notation (countdown answers are expressions)."""
    if p.family in ("add", "arith"):
        return render_number(int(p.answer), p.notation)
    if p.family == "countdown":
        toks = [int(t) if t.isdigit() else t for t in p.answer.split()]
        return render_expr(toks, p.notation)
    return p.answer


def build_corpus(world: World, cfg: WorldConfig, split: str = "corpus", n_docs: int | None = None) -> list[dict]:
    """Sample documents from one split's problems (the pretraining corpus uses only `corpus`; the
    held-out loss uses `eval`). Returns rows of {text, doc_kind, family, notation}."""
    rng = random.Random(f"{cfg.seed}:{split}")
    pools = {f: [p for s, p in world.problems(f) if s == split]
             for f in REASONING_FAMILIES + INSTRUCTION_FAMILIES}
    fams = list(cfg.family_weights)
    weights = [cfg.family_weights[f] for f in fams]
    kinds = list(cfg.doc_mix)
    kind_w = [cfg.doc_mix[k] for k in kinds]
    rows = []
    for _ in range(cfg.corpus_docs if n_docs is None else n_docs):
        kind = rng.choices(kinds, kind_w)[0]
        if kind == "facts":
            rows.append({"text": world.fact_text(rng), "doc_kind": kind, "family": "fact", "notation": "word"})
            continue
        if kind == "instruction":
            fam = rng.choice(INSTRUCTION_FAMILIES)
            p = rng.choice(pools[fam])
            text = (render_chat([{"role": "user", "content": p.question},
                                 {"role": "assistant", "content": p.answer}])
                    if rng.random() < 0.5 else f"Q: {p.question}\nA: {p.answer}")
            rows.append({"text": text, "doc_kind": kind, "family": fam, "notation": p.notation})
            continue
        fam = rng.choices(fams, weights)[0]
        p = rng.choice(pools[fam])
        steps = _mixed_steps(p, rng) if rng.random() < cfg.mixed_notation_fraction else list(p.steps)
        check = _self_check(p)
        if check and rng.random() < cfg.self_check_fraction:
            steps.append(check)
        ans = render_answer(p)
        if kind == "bare":
            text = f"Problem: {p.question}\nAnswer: {ans}"
        elif kind == "worked":
            # Draw only when the option is on, so corpora of recipes without it stay byte-identical.
            if cfg.tagged_worked_fraction and rng.random() < cfg.tagged_worked_fraction:
                text = f"Problem: {p.question}\nSolution: {tagged_response(' '.join(steps), ans)}"
            else:
                text = f"Problem: {p.question}\nSolution: {' '.join(steps)}\nAnswer: {ans}"
        else:  # chat, under the R1-Zero template; mostly untagged answers
            if rng.random() < cfg.tagged_fraction:
                resp = tagged_response(" ".join(steps), ans)
            elif cfg.direct_answer_fraction and rng.random() < cfg.direct_answer_fraction:
                resp = f"Answer: {ans}"
            else:
                resp = f"{' '.join(steps)} Answer: {ans}"
            text = render_chat([{"role": "system", "content": R1_ZERO_SYSTEM},
                                {"role": "user", "content": p.question},
                                {"role": "assistant", "content": resp}])
        rows.append({"text": text, "doc_kind": kind, "family": fam, "notation": p.notation})
    return rows


def build_prompt_sets(world: World, cfg: WorldConfig) -> dict[str, list[dict]]:
    """Held-out `eval` and `rl` prompt rows, up to the per-family caps, from their own splits."""
    rng = random.Random(cfg.seed + 1)
    out: dict[str, list[dict]] = {"eval": [], "rl": []}
    caps = {"eval": cfg.eval_per_family, "rl": cfg.rl_per_family}
    for fam in REASONING_FAMILIES + INSTRUCTION_FAMILIES:
        by_split: dict[str, list[Problem]] = {"eval": [], "rl": []}
        for s, p in world.problems(fam):
            if s in by_split:
                by_split[s].append(p)
        for split, ps in by_split.items():
            rng.shuffle(ps)
            out[split] += [p.row(split) for p in ps[:caps[split]]]
    return out


def corpus_keys(world: World) -> set[str]:
    """Canonical keys of every corpus-split problem (used by the split-disjointness test)."""
    return {p.key for f in REASONING_FAMILIES + INSTRUCTION_FAMILIES for s, p in world.problems(f)
            if s == "corpus"}
