"""Render artifact lineage from manifests: a Mermaid graph (Prefect's UI renders it in Markdown
artifacts) and an indented tree for the terminal. Reads manifests only; never the payloads."""

from __future__ import annotations

from r1flow.data.store import ArtifactStore, Manifest


def _label(m: Manifest) -> str:
    return f"{m.stage}<br/>{m.kind} {m.id[:12]}"


def mermaid(manifests: list[Manifest]) -> str:
    ids = {m.id for m in manifests}
    lines = ["graph LR"]
    for m in manifests:
        lines.append(f'  a{m.id[:12]}["{_label(m)}"]')
    for m in manifests:
        for p in m.parents:
            if p in ids:
                lines.append(f"  a{p[:12]} --> a{m.id[:12]}")
    return "\n".join(lines)


def mermaid_markdown(manifests: list[Manifest], title: str) -> str:
    rows = "\n".join(f"| {m.stage} | {m.kind} | `{m.id[:12]}` | {', '.join(f'`{p[:12]}`' for p in m.parents) or '-'} |"
                     for m in manifests)
    return (f"# {title}\n\n```mermaid\n{mermaid(manifests)}\n```\n\n"
            f"| stage | kind | artifact | parents |\n|---|---|---|---|\n{rows}\n")


def tree(store: ArtifactStore, art_id: str) -> str:
    """The artifact and its ancestors, children above parents:

    evaluate report 1a2b3c4d5e6f
    └── pretrain checkpoint 9f8e7d6c5b4a
        ├── world dataset ...
    """
    out: list[str] = []

    def visit(i: str, prefix: str, last: bool, root: bool) -> None:
        m = store.manifest(i)
        branch = "" if root else ("└── " if last else "├── ")
        out.append(f"{prefix}{branch}{m.stage} {m.kind} {m.id[:12]}  ({m.created:%Y-%m-%d %H:%M})")
        child_prefix = prefix if root else prefix + ("    " if last else "│   ")
        for j, p in enumerate(m.parents):
            visit(p, child_prefix, j == len(m.parents) - 1, False)

    visit(art_id, "", True, True)
    return "\n".join(out)
