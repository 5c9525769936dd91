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

__all__ = ["import_closure", "code_fingerprint", "read_record", "write_record", "RECORD"]

PACKAGE = Path(__file__).resolve().parent
RECORD = ".provenance.json"


def _imports(module: str) -> set[str]:
    """The getlib modules that `module` (e.g. 'getlib.pairs') imports anywhere in its source."""
    tree = ast.parse((PACKAGE / f"{module.split('.', 1)[1]}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("getlib.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "getlib":   # from getlib import data
                found |= {f"getlib.{a.name}" for a in node.names if (PACKAGE / f"{a.name}.py").is_file()}
            elif node.module.startswith("getlib."):
                found.add(node.module)
    return found


def import_closure(*modules: str) -> list[str]:
    """`modules` and every getlib module they can import, sorted."""
    seen, todo = set(), list(modules)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += sorted(_imports(m) - seen)
    return sorted(seen)


def code_fingerprint(*modules: str) -> str:
    """sha256 over the names and code of the import closure of `modules`: the syntax tree without
    docstrings, so that an edit of a comment, a docstring or the layout leaves it unchanged."""
    h = hashlib.sha256()
    for m in import_closure(*modules):
        tree = ast.parse((PACKAGE / f"{m.split('.', 1)[1]}.py").read_text())
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
