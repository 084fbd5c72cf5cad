"""Render artifact lineage from manifests: a PNG graph and a Mermaid graph for Markdown artifacts,
and an indented tree for the terminal. Reads manifests only; never the payloads.

Prefect's UI (3.7) shows a Mermaid block as source text, not as a diagram, so the Markdown
artifact leads with the same graph drawn as a PNG (inline, as a data URI); the Mermaid source stays
below it for renderers that draw it (GitHub, most Markdown viewers)."""

from __future__ import annotations

import json

from r1flow.data.store import ArtifactStore, Manifest


def _stage(m: Manifest) -> str:
    """The stage, and for an import of your own data the source's name (its summary's `data_source`)."""
    src = m.summary.get("data_source")
    return f"{m.stage} {src}" if isinstance(src, str) else m.stage


def _label(m: Manifest) -> str:
    return f"{_stage(m)}<br/>{m.kind} {m.id[:12]}"


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


def graph_png(manifests: list[Manifest]) -> bytes:
    """The lineage as a left-to-right PNG: one column per depth (longest path from a root)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_id = {m.id: m for m in manifests}
    depth: dict[str, int] = {}

    def d(i: str) -> int:
        if i not in depth:
            depth[i] = 1 + max((d(p) for p in by_id[i].parents if p in by_id), default=-1)
        return depth[i]

    cols: dict[int, list[Manifest]] = {}
    for m in manifests:
        cols.setdefault(d(m.id), []).append(m)
    pos = {m.id: (x, -y) for x, col in cols.items() for y, m in enumerate(col)}
    height = max(len(c) for c in cols.values())
    fig, ax = plt.subplots(figsize=(2.6 * len(cols) + 0.5, 0.9 * height + 0.6))
    for m in manifests:
        for p in m.parents:
            if p in pos:
                span = pos[m.id][0] - pos[p][0]  # edges that skip columns arc over the ones between
                ax.annotate("", xy=pos[m.id], xytext=pos[p], zorder=1,
                            arrowprops={"arrowstyle": "-|>", "color": "#777", "shrinkA": 52, "shrinkB": 52,
                                        "connectionstyle": f"arc3,rad={-0.12 * (span - 1)}"})
    for m in manifests:
        ax.text(*pos[m.id], f"{_stage(m)}\n{m.kind} {m.id[:12]}", ha="center", va="center", fontsize=8,
                zorder=2, bbox={"boxstyle": "round", "fc": "#e8f0fe", "ec": "#4a6fa5"})
    arc = max((pos[m.id][0] - pos[p][0] for m in manifests for p in m.parents if p in pos), default=1)
    ax.set(xlim=(-0.6, len(cols) - 0.4), ylim=(-height + 0.4, 0.5 + 0.18 * arc))
    ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def mermaid_markdown(manifests: list[Manifest], title: str) -> str:
    import base64

    rows = "\n".join(f"| {_stage(m)} | {m.kind} | `{m.id[:12]}` | {', '.join(f'`{p[:12]}`' for p in m.parents) or '-'} |"
                     for m in manifests)
    png = base64.b64encode(graph_png(manifests)).decode()
    return (f"# {title}\n\n![lineage graph](data:image/png;base64,{png})\n\n"
            f"| stage | kind | artifact | parents |\n|---|---|---|---|\n{rows}\n\n"
            f"Mermaid source:\n\n```mermaid\n{mermaid(manifests)}\n```\n")


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
        out.append(f"{prefix}{branch}{_stage(m)} {m.kind} {m.id[:12]}  ({m.created:%Y-%m-%d %H:%M})")
        child_prefix = prefix if root else prefix + ("    " if last else "│   ")
        for j, p in enumerate(m.parents):
            visit(p, child_prefix, j == len(m.parents) - 1, False)

    visit(art_id, "", True, True)
    return "\n".join(out)


def card_markdown(m: Manifest, uri: str, parents: list[tuple[Manifest, str]]) -> str:
    """A stage card: what went in (parent artifacts), what came out (files, tables), the summary
    (metrics, filter counts), as Markdown for a Prefect artifact. `parents` pairs manifests with URIs."""
    out = [f"# {m.stage}: {m.kind} `{m.id[:12]}`", "",
           f"Made {m.created:%Y-%m-%d %H:%M UTC}, code `{m.code_version[:12]}`, config `{m.config_hash[:12]}`, "
           f"cache key `{m.cache_key[:12]}`. Location: [{uri}]({uri})", "", "## In", ""]
    out += ([f"- {_stage(p)} {p.kind} [`{p.id[:12]}`]({u})" for p, u in parents] or ["- (no parent artifacts)"])
    out += ["", "## Out", "", "| file | bytes | rows |", "|---|---|---|"]
    for f in m.files:
        rows = m.tables[f.path].rows if f.path in m.tables else ""
        out.append(f"| [{f.path}]({uri}/{f.path}) | {f.bytes:,} | {rows} |")
    scalars = {k: v for k, v in m.summary.items() if not isinstance(v, dict | list)}
    nested = {k: v for k, v in m.summary.items() if isinstance(v, dict | list)}
    out += ["", "## Summary", "", "| metric | value |", "|---|---|"]
    out += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in scalars.items()]
    for k, v in nested.items():
        out += ["", f"**{k}**", "", "```json", json.dumps(v, indent=1, default=str), "```"]
    return "\n".join(out) + "\n"
