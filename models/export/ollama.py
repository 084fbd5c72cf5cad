"""An Ollama `Modelfile` next to each GGUF file: `FROM` the file, a Go `TEMPLATE` that renders exactly
what the model's own chat template renders, its stop token, and the sampling the R1 paper recommends
for reasoning models (temperature 0.6, top-p 0.95).

The Go template is derived from the Jinja chat template, not written by hand: each role's text around
the message content and the generation prompt are read off renders with sentinel contents, then every
conversation in `PROBES` is rendered both ways (`render_go`, an interpreter for exactly the template
subset emitted here) and must match. A chat template that depends on more than the role (message
position, tools, ...) fails that comparison and the export says so.
"""

from __future__ import annotations

import re

R1_SAMPLING = {"temperature": 0.6, "top_p": 0.95}
ROLES = ("system", "user", "assistant")
SENTINEL = "\x00R1FLOW_CONTENT\x00"
PROBES = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sort 3 1 2."}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "<think> b </think> <answer> c </answer>"},
     {"role": "user", "content": "d\ne"}],
    [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "x"},
     {"role": "user", "content": "v"}],
]


class TemplateError(ValueError):
    """The chat template cannot be expressed as a per-role Ollama template."""


def _render(tokenizer, messages: list[dict], gen: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


def role_pieces(tokenizer) -> dict[str, tuple[str, str]]:
    """Per role, the text before and after the message content; under "generation", the prompt."""
    empty = _render(tokenizer, [], True) if _renders_empty(tokenizer) else None
    pieces = {}
    for role in ROLES:
        text = _render(tokenizer, [{"role": role, "content": SENTINEL}], False)
        if text.count(SENTINEL) != 1:
            raise TemplateError(f"the chat template renders a {role} message's content {text.count(SENTINEL)} times")
        pieces[role] = tuple(text.split(SENTINEL))
    gen = empty if empty is not None else _render(tokenizer, [{"role": "user", "content": SENTINEL}], True) \
        .split(SENTINEL, 1)[1][len(pieces["user"][1]):]
    pieces["generation"] = ("", gen)
    return pieces


def _renders_empty(tokenizer) -> bool:
    try:
        _render(tokenizer, [], True)
        return True
    except Exception:  # noqa: BLE001 - templates may index messages[0]; the other route covers them
        return False


def go_template(pieces: dict[str, tuple[str, str]]) -> str:
    """The Ollama TEMPLATE: one line of actions with no whitespace trimming, so every literal (newlines
    included) is emitted exactly."""
    for role, (pre, post) in pieces.items():
        for text in (pre, post):
            if "{{" in text or "}}" in text or '"""' in text:
                raise TemplateError(f"the {role} text {text!r} contains '{{{{', '}}}}' or '\"\"\"'")
    branches = "".join(f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{r}" }}}}{pieces[r][0]}{{{{ .Content }}}}'
                       f"{pieces[r][1]}" for i, r in enumerate(ROLES))
    return f"{{{{ range .Messages }}}}{branches}{{{{ end }}}}{{{{ end }}}}{pieces['generation'][1]}"


_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def render_go(template: str, messages: list[dict]) -> str:
    """Render `template` (the subset `go_template` emits: range .Messages, if/else if eq .Role "x",
    .Content, end) for `messages`, as Go's text/template would."""
    tokens = []  # ("text", s) | ("action", s)
    pos = 0
    for m in _ACTION.finditer(template):
        tokens.append(("text", template[pos:m.start()]))
        tokens.append(("action", m.group(1).strip()))
        pos = m.end()
    tokens.append(("text", template[pos:]))
    if tokens[1] != ("action", "range .Messages"):
        raise TemplateError("the template must start with {{ range .Messages }}")
    end = max(i for i, t in enumerate(tokens) if t == ("action", "end"))
    body, tail = tokens[2:end], tokens[end + 1:]
    out = [tokens[0][1]]
    for msg in messages:
        active, taken = False, False
        for kind, s in body:
            if kind == "action" and (m := re.fullmatch(r'(?:if|else if) eq \.Role "(\w+)"', s)):
                active = not taken and msg["role"] == m.group(1)
                taken = taken or active
            elif kind == "action" and s == "end":
                active = False
            elif active:
                out.append(msg["content"] if kind == "action" and s == ".Content" else s if kind == "text" else "")
                if kind == "action" and s != ".Content":
                    raise TemplateError(f"unsupported action {{{{ {s} }}}}")
    out += [s for kind, s in tail if kind == "text"]
    return "".join(out)


def verified_template(tokenizer) -> str:
    """`go_template` of the tokenizer's chat template, checked against it on every probe conversation."""
    template = go_template(role_pieces(tokenizer))
    for msgs in PROBES:
        want, got = _render(tokenizer, msgs, True), render_go(template, msgs)
        if want != got:
            raise TemplateError(f"the derived Ollama template renders {got!r} where the chat template renders "
                                f"{want!r} (messages {msgs})")
    return template


def modelfile(gguf_name: str, template: str, stop: list[str], system: str | None, num_ctx: int) -> str:
    """The Modelfile text for `ollama create NAME -f Modelfile` in the GGUF file's directory."""
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if system:
        if '"""' in system:
            raise TemplateError('the system prompt contains \'"""\'')
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{s}"' for s in stop]
    lines += [f"PARAMETER temperature {R1_SAMPLING['temperature']}", f"PARAMETER top_p {R1_SAMPLING['top_p']}",
              f"PARAMETER num_ctx {num_ctx}"]
    return "\n".join(lines) + "\n"
