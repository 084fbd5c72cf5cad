"""Prompt templates and the chat format shared by the corpus, the tokenizer and every stage.

The chat template exists twice on purpose and is tested for equality: as Jinja (saved with the
tokenizer, used by TRL, vLLM and `apply_chat_template`) and as `render_chat` (used to write the
pretraining corpus before any tokenizer exists). Nothing here tokenizes.
"""

from __future__ import annotations

# R1 paper, Table 1: the R1-Zero training template ("prompt" is replaced by the question).
R1_ZERO_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>."
)

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"
REASONING_TAGS = [THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE]
SPECIAL_TOKENS = [PAD, BOS, EOS, *REASONING_TAGS]  # all single tokens; only PAD/BOS/EOS are "special"

# `{% generation %}` marks assistant text so TRL can compute the loss on completions only.
# Newlines are emitted as expressions: transformers renders templates with trim_blocks=True, which
# would swallow a literal newline that follows a block tag such as {% endgeneration %}.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}{{ '\\n' }}"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}{{ '\\n' }}"
    "{% elif m['role'] == 'assistant' %}Assistant: {% generation %}{{ m['content'] }}{{ eos_token }}{% endgeneration %}{{ '\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def render_chat(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """Python twin of CHAT_TEMPLATE (tests/test_tokenizer.py holds them equal)."""
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(f"{m['content']}\n")
        elif m["role"] == "user":
            parts.append(f"User: {m['content']}\n")
        elif m["role"] == "assistant":
            parts.append(f"Assistant: {m['content']}{EOS}\n")
        else:
            raise ValueError(f"unknown chat role {m['role']!r}")
    if add_generation_prompt:
        parts.append("Assistant:")
    return "".join(parts)


def r1_zero_messages(question: str) -> list[dict]:
    return [{"role": "system", "content": R1_ZERO_SYSTEM}, {"role": "user", "content": question}]


def prompt_messages(question: str, kind: str = "reasoning") -> list[dict]:
    """How every stage asks a problem: reasoning problems under the R1-Zero template, anything else
    (instruction tasks, R1's "non-reasoning data") as a plain user turn."""
    return r1_zero_messages(question) if kind == "reasoning" else [{"role": "user", "content": question}]


# How a stage asks an imported problem (`template` of the RL, sampling and benchmark configs).
TEMPLATES = {
    "r1_zero": "R1 paper Table 1 (system prompt asking for <think>/<answer> tags), through the chat template",
    "chat": "the tokenizer's own chat template, the question as the only user turn (instruct models)",
}


def check_template(template: str) -> str:
    """A recipe's template: a name in TEMPLATES, or your own prompt text containing `{question}`."""
    if template not in TEMPLATES and "{question}" not in template:
        raise ValueError(f"template {template[:60]!r}: not one of {list(TEMPLATES)} and has no {{question}} "
                         "placeholder")
    return template


def render_prompt(question: str, kind: str, tokenizer, template: str = "r1_zero") -> str:
    """The prompt text a reasoning problem is sampled from. A template of your own is used verbatim with
    `{question}` replaced (no chat template around it: write the model's own chat markup into it, as
    SimpleRL-Zoo's qwen-boxed prompt does). Instruction tasks are always a plain user turn."""
    if kind == "reasoning" and template not in TEMPLATES:
        return template.replace("{question}", question)
    messages = r1_zero_messages(question) if kind == "reasoning" and template == "r1_zero" else \
        [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def tagged_response(reasoning: str, answer: str) -> str:
    return f"{THINK_OPEN} {reasoning} {THINK_CLOSE} {ANSWER_OPEN} {answer} {ANSWER_CLOSE}"
