"""`r1flow` command line: run the DAG, list stages, inspect artifacts and lineage.

    r1flow run --recipe configs/tiny.yaml [--from STAGE] [--until STAGE] [--force STAGE] [--dry-run]
    r1flow serve --recipe configs/tiny.yaml   # Prefect server + deployments + local worker
    r1flow stages [--recipe R]
    r1flow validate --recipe configs/tiny.yaml
    r1flow artifacts ls | r1flow artifacts show ID
    r1flow lineage ID
    r1flow export ID [--format gguf --format hf] [--type f16] [--quant q8_0,q4_k_m] [--name NAME]
    r1flow plan --recipe configs/deepseek_r1.yaml [--references]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="The DeepSeek-R1 recipe as a Prefect DAG.")
artifacts_app = typer.Typer(no_args_is_help=True, help="Inspect the content-addressed artifact store.")
app.add_typer(artifacts_app, name="artifacts")

RECIPE = typer.Option("configs/tiny.yaml", "--recipe", "-r", help="Recipe YAML file.")
STORE = typer.Option(None, "--store", help="Store root (default: $R1FLOW_STORE or ./artifacts).")


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _store(store: str | None):
    from r1flow.data.store import ArtifactStore
    from r1flow.recipe import DEFAULT_STORE

    return ArtifactStore(store or os.environ.get("R1FLOW_STORE") or DEFAULT_STORE)


@app.command()
def run(recipe: Path = RECIPE,
        from_stage: str = typer.Option(None, "--from", help="First stage to run (earlier ones must be cached)."),
        until_stage: str = typer.Option(None, "--until", help="Last stage to run."),
        force: list[str] = typer.Option([], "--force", help="Recompute this stage even if cached (repeatable)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print which stages would be reused, computed or "
                                                               "skipped, and why; run nothing."),
        store: str = STORE) -> None:
    """Run the pipeline (or part of it) on a recipe."""
    from r1flow.recipe import RecipeError, load_recipe

    try:
        rec = load_recipe(recipe, {"store": store} if store else None)
    except RecipeError as e:
        _fail(str(e))
    from r1flow.stages import dry_run as plan_run, select

    try:
        steps = select(rec, from_stage, until_stage, force)
    except ValueError as e:
        _fail(str(e))
    if dry_run:
        rows = plan_run(rec, _store(rec.store_root()), steps)
        for r in rows:
            typer.echo(f"{r['action']:<8} {r['node']:<26} {r['why']}")
        counts = {a: sum(r["action"] == a for r in rows) for a in ("reuse", "compute", "missing", "skip")}
        typer.echo("\n" + ", ".join(f"{n} {a}" for a, n in counts.items()) + f" (store: {rec.store_root()})")
        if counts["missing"]:
            _fail("stages before --from are missing from the store; the run would stop there", code=1)
        return
    from r1flow.flows.pipeline import pipeline

    try:
        result = pipeline(recipe=rec, from_stage=from_stage, until_stage=until_stage, force=force)
    except Exception as e:  # noqa: BLE001 - the flow run's log above has the traceback
        if os.environ.get("R1FLOW_DEBUG"):
            raise
        _fail(f"{type(e).__name__}: {e}\n(the run failed; completed stages are cached. "
              "R1FLOW_DEBUG=1 re-raises with the traceback)", code=1)
    typer.echo("\nArtifacts (store: %s):" % rec.store_root())
    for stage, path in result.items():
        typer.echo(f"  {stage:<14} {path}")
    if "report" in result:
        report_md = Path(result["report"]) / "report.md"
        typer.echo(f"\nReport: {report_md}\n\n" + report_md.read_text())
    from r1flow.tasks.plan import plan_markdown

    st = _store(rec.store_root())
    typer.echo("\n" + plan_markdown(rec, {k: st.ref(Path(p).name) for k, p in result.items()}, st, steps))


@app.command()
def serve(recipe: Path = RECIPE,
          host: str = typer.Option("127.0.0.1", help="Address the Prefect server listens on."),
          port: int = typer.Option(4200, help="Port of the Prefect server and UI.")) -> None:
    """Start a Prefect server (unless PREFECT_API_URL points at one), register the pipeline and stage
    deployments of a recipe on a local process work pool, and run a worker until Ctrl-C."""
    from r1flow.recipe import RecipeError, load_recipe

    try:
        rec = load_recipe(recipe)
    except RecipeError as e:
        _fail(str(e))
    from r1flow.flows.deployments import serve as serve_all

    serve_all(rec, recipe, host, port)


@app.command()
def validate(recipe: Path = RECIPE) -> None:
    """Check a recipe without running anything."""
    from r1flow.recipe import RecipeError, load_recipe

    from r1flow.stages import dag

    try:
        rec = load_recipe(recipe)
        nodes = dag(rec)  # what needs the whole recipe: parents that exist, export labels that are checkpoints
    except (RecipeError, ValueError) as e:
        _fail(str(e))
    typer.echo(f"{recipe}: ok (recipe {rec.name!r}, {len(nodes)} nodes, store {rec.store_root()})")


@app.command()
def stages(recipe: Path = RECIPE) -> None:
    """List the DAG's stages in execution order, with their parents as the recipe resolves them (a stage
    the recipe leaves out, e.g. stage 9 without students, is marked)."""
    from r1flow.recipe import RecipeError, load_recipe
    from r1flow.stages import STAGES, graph

    try:
        rec = load_recipe(recipe)
    except RecipeError as e:
        _fail(str(e))
    parents = graph(rec)
    typer.echo(f"The DAG of {recipe} (recipe {rec.name!r}): stage, recipe section, parent stages, what it does")
    for i, (name, st) in enumerate(STAGES.items()):
        got = f"<- {', '.join(parents[name]) or '-'}" if name in parents else "(not in this recipe)"
        typer.echo(f"{i:>2}  {name:<18} {st.section:<20} {got}\n{'':<24}{st.what}")


@artifacts_app.command("ls")
def artifacts_ls(store: str = STORE) -> None:
    """List artifacts, oldest first."""
    st = _store(store)
    for m in st.list():
        rows = sum(t.rows for t in m.tables.values())
        size = sum(f.bytes for f in m.files)
        typer.echo(f"{m.id[:12]}  {m.created:%Y-%m-%d %H:%M:%S}  {m.stage:<10} {m.kind:<10} "
                   f"{size / 1e6:8.2f} MB  {rows or '':>8}  parents: {', '.join(p[:12] for p in m.parents) or '-'}")


@artifacts_app.command("show")
def artifacts_show(art_id: str, store: str = STORE) -> None:
    """Verify an artifact against its manifest and print the manifest."""
    from r1flow.data.store import ArtifactError

    try:
        m = _store(store).verify(art_id)
    except ArtifactError as e:
        _fail(str(e), 1)
    typer.echo(m.model_dump_json(indent=2))


@app.command()
def lineage(art_id: str, store: str = STORE,
            mermaid: bool = typer.Option(False, "--mermaid", help="Print a Mermaid graph instead of a tree.")) -> None:
    """Print an artifact's ancestry."""
    from r1flow.data.lineage import mermaid as to_mermaid, tree
    from r1flow.data.store import ArtifactError

    st = _store(store)
    try:
        typer.echo(to_mermaid(st.ancestry(art_id)) if mermaid else tree(st, art_id))
    except ArtifactError as e:
        _fail(str(e), 1)


@app.command()
def plan(recipe: Path = RECIPE, store: str = STORE,
         references: bool = typer.Option(False, "--references",
                                         help="Also reproduce DeepSeek-V3's and Llama-3.1-405B's published budgets.")) -> None:
    """Estimate a recipe's compute, memory, GPU-hours and dollars before running it; after a run, show
    the estimate next to each stage's measured wall time."""
    from r1flow.recipe import RecipeError, load_recipe
    from r1flow.stages import latest_refs
    from r1flow.tasks.plan import plan_markdown

    try:
        rec = load_recipe(recipe, {"store": store} if store else None)
    except RecipeError as e:
        _fail(str(e))
    st = _store(rec.store_root()) if Path(rec.store_root()).exists() else None
    refs = latest_refs(st, rec) if st else None
    typer.echo(plan_markdown(rec, refs, st))
    if references:
        from r1flow.models.plan import format_references

        typer.echo("\n" + format_references())


@app.command("export")
def export_cmd(art_id: str, store: str = STORE,
               formats: list[str] = typer.Option(["gguf", "hf"], "--format", help="gguf and/or hf (repeatable)."),
               gguf_type: str = typer.Option("f16", "--type", help="GGUF type the converter writes: f32 f16 bf16 q8_0."),
               quant: str = typer.Option("q8_0,q4_k_m", "--quant", help="More GGUF types, comma-separated ('' none)."),
               name: str = typer.Option(None, "--name", help="Model name (files, Ollama). Default: r1flow-STAGE-ID8."),
               prompts: int = typer.Option(16, "--prompts", help="Held-out prompts of the llama.cpp check.")) -> None:
    """Export a checkpoint artifact as GGUF (checked by llama.cpp, with Ollama Modelfiles) and/or a Hugging
    Face folder; the export is an artifact whose parent is the checkpoint."""
    from pydantic import ValidationError

    from r1flow.data.store import ArtifactError
    from r1flow.models.export import ExportConfig
    from r1flow.models.export.gguf import ExportError
    from r1flow.stages import STAGES
    from r1flow.tasks.common import Node, run_node
    from r1flow.tasks.export import export_rows

    st = _store(store)
    try:
        m = st.manifest(art_id)
        cfg = ExportConfig(formats=formats, gguf_type=gguf_type, quant=[q for q in quant.split(",") if q],
                           check={"prompts": prompts})
    except (ArtifactError, ValidationError) as e:
        _fail(str(e))
    if m.kind != "checkpoint":
        _fail(f"artifact {m.id[:12]} is a {m.kind} of stage {m.stage}; export takes a checkpoint")
    ancestry = st.ancestry(m.id)
    world = next((a for a in reversed(ancestry) if a.stage == "world"), None)
    if world is None:
        _fail(f"checkpoint {m.id[:12]} has no world artifact in its lineage: no held-out prompts for the llama.cpp check")
    evals = [e for e in st.list() if e.stage == "evaluate" and e.parents and e.parents[0] == m.id]
    label = evals[-1].config.get("label", m.stage) if evals else m.stage
    name = name or f"r1flow-{m.stage}-{m.id[:8]}"
    parents = {"checkpoint": "checkpoint", "world": "world"} | ({"evaluate": "evaluate"} if evals else {})
    refs = {"checkpoint": st.ref(m.id), "world": st.ref(world.id)} | ({"evaluate": st.ref(evals[-1].id)} if evals else {})
    node = Node(f"export:{label}", "export", cfg, parents, label=label,
                record={"export": cfg.model_dump(mode="json"), "label": label, "name": name, "template": "r1_zero"})
    try:
        ref = run_node(st, node, STAGES["export"].kind, STAGES["export"].build, refs)
    except (ExportError, ValueError) as e:
        _fail(str(e), 1)
    typer.echo(f"export artifact {ref.id[:12]}: {ref.path}")
    for r in export_rows(ref, label):
        check = f"tokens {r['tokens equal']}, max |dlogp| {r['max |dlogp|']:.1e}, greedy {r['greedy equal']}" \
            if r["format"] == "gguf" else "loads with transformers"
        typer.echo(f"  {r['format']:<4} {r['type']:<11} {r['MiB']:8.2f} MiB  {check}\n       {r['run']}")


def main() -> None:
    app()


if __name__ == "__main__":  # vLLM engine processes are spawned: keep the guard
    sys.exit(main())
