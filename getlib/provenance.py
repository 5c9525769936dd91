"""Where an artifact came from: the getlib code that can run when it is made, as one fingerprint.

A pair set and a training run keep a provenance record (`.provenance.json` in their folder) with the
fingerprint of the code that made them (a run also records its pair set's manifest sha256, its
checkpoint's sha256 and its wall-clock seconds); an interrupted one is resumed only when they agree.
The record is listed in `.dvcignore`, so an edit that leaves the bytes unchanged leaves DVC's hash of
the folder unchanged too.

The code of a module is its import closure inside getlib: every getlib module it imports, at the
top or inside a function, followed transitively, read from the source files (nothing is imported).
"""
from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

from getlib.io import atomic_write_json

__all__ = ["import_closure", "imported_modules", "module_file", "code_fingerprint", "read_record", "write_record", "RECORD"]

PACKAGE = Path(__file__).resolve().parent
RECORD = ".provenance.json"
# Modules a fingerprint leaves out: the package's __init__ (its version string), the settings
# dataclasses, whose values every record keeps (a pair set's manifest, a run's settings) and compares,
# and the progress bars, which write only to a terminal.
NOT_CODE = {"getlib", "getlib.settings", "getlib.progress"}


def module_file(module: str) -> Path:
    """The source file of a getlib module ('getlib.stages' -> getlib/stages/__init__.py)."""
    rel = Path(*module.split(".")[1:])
    return PACKAGE / rel / "__init__.py" if (PACKAGE / rel).is_dir() else PACKAGE / rel.with_suffix(".py")


def _is_module(module: str) -> bool:
    return module_file(module).is_file()


def _with_packages(module: str) -> set[str]:
    """`module` and the packages Python runs first to import it ('getlib', 'getlib.stages')."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def imported_modules(tree: ast.AST) -> set[str]:
    """The getlib modules (with their packages) that the code `tree` imports anywhere in it."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name == "getlib" or a.name.startswith("getlib.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
                node.module == "getlib" or node.module.startswith("getlib.")):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")}
    return {p for m in found for p in _with_packages(m)}


def _imports(module: str) -> set[str]:
    return imported_modules(ast.parse(module_file(module).read_text()))


def import_closure(*modules: str) -> list[str]:
    """`modules` and every getlib module they can import, sorted."""
    seen, todo = set(), [p for m in modules for p in sorted(_with_packages(m))]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += sorted(_imports(m) - seen)
    return sorted(seen)


def code_fingerprint(*modules: str) -> str:
    """sha256 over the names and code of the import closure of `modules` (but NOT_CODE): the syntax
    tree without docstrings, so that an edit of a comment, a docstring or the layout leaves it unchanged."""
    h = hashlib.sha256()
    for m in import_closure(*modules):
        if m in NOT_CODE:
            continue
        tree = ast.parse(module_file(m).read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        h.update(m.encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return h.hexdigest()


def read_record(folder: str | Path, name: str = RECORD) -> dict | None:
    """The record `name` (the provenance record by default) in `folder`, or None when there is
    none or it is unreadable."""
    path = Path(folder) / name
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(folder: str | Path, record: dict, name: str = RECORD) -> None:
    atomic_write_json(Path(folder) / name, record)
