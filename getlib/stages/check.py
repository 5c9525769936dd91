"""Stage check: params.yaml validated before any other stage runs.

    python -m getlib.stages.check params.yaml work/<profile>/checked

DVC removes a stage's outputs when it starts it, so a bad value found by the stage that reads it
costs that stage's committed outputs, and an environment without the project installed fails inside
a notebook. This stage runs first (the data stage, upstream of all others, depends on its token), so
either error stops `dvc repro` in one line with nothing removed. The token is the same bytes for
every valid params.yaml: a changed value re-runs this check, never, through it, a stage.
"""
from __future__ import annotations

import sys
from pathlib import Path

TOKEN = b"params.yaml checked: every key known, every value valid (getlib.config.load_params)\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m getlib.stages.check PARAMS TOKEN", file=sys.stderr)
        return 2
    params, token = map(Path, args)
    try:
        import papermill  # noqa: F401  (every other stage runs a notebook)

        from getlib.config import load_params, project_root
        from getlib.io import atomic_write
    except ModuleNotFoundError as e:
        print(f"{sys.executable} has no {e.name!r}: run DVC from the project's environment "
              "(source .venv/bin/activate, or use the Makefile's targets)", file=sys.stderr)
        return 1
    try:
        load_params(params, root=project_root())
    except Exception as e:   # one line, whatever the check found (a ParamsError names the key)
        print(f"{params}: {e}" if isinstance(e, ValueError) else f"{params}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    atomic_write(token, lambda f: f.write(TOKEN))
    return 0


if __name__ == "__main__":
    sys.exit(main())
