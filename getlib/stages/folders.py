"""How the pairs and distill stages take a folder they find: one protocol for both.

A stage owns its folders (work/<profile>/pairs/<condition>/, work/<profile>/students/<key>/) and
finds in them what an earlier run left. It
1. keeps a folder the library's check finds nothing against (to resume it, or, finished, as it is),
   and removes any other, saying why (`clear_unless_resumable`);
2. into an empty folder, copies another folder when the library's check finds it to be the artifact
   the stage would make (another profile's identical pair set or run, with `reuse:`; a shorter run
   that this run continues), checking the copy again where the check reads what it copied
   (`adopt`). The source is only read.
What the stage finds and does goes to stderr, which the rendered notebook leaves out: the rendering
depends on the stage's inputs, not on what happened to be in work/.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from getlib.io import atomic_copytree, remove_owned

__all__ = ["is_empty", "log", "clear_unless_resumable", "adopt", "adopt_reused"]

Problems = Callable[[Path], list[str]]


def is_empty(folder: Path) -> bool:
    return not (folder.exists() and any(folder.iterdir()))


def log(folder: Path, message: str) -> None:
    print(f"{folder}: {message}", file=sys.stderr, flush=True)


def clear_unless_resumable(folder: Path, owner: Path, problems: list[str], anew: str) -> None:
    """Remove `folder` (inside `owner`) when `problems` names anything, saying `anew` and why."""
    if problems:
        log(folder, f"{anew}: {'; '.join(problems)}")
        remove_owned(folder, owner)


def adopt(folder: Path, owner: Path, source: Path, problems: Problems, problems_of_copy: Problems | None = None,
          skip: tuple[str, ...] = ()) -> list[str]:
    """Copy `source` into `folder` (inside `owner`) when `problems(source)` finds nothing, leaving out
    the files named in `skip`; with `problems_of_copy`, the copy is checked again and removed if it
    fails. Returns why it was not adopted; [] when it was."""
    why_not = problems(source)
    if not why_not:
        remove_owned(folder, owner)
        atomic_copytree(source, folder, skip=skip)
        why_not = problems_of_copy(folder) if problems_of_copy else []
        if why_not:
            remove_owned(folder, owner)
    return why_not


def adopt_reused(folder: Path, owner: Path, source: Path | None, what: str, problems: Problems,
                 problems_of_copy: Problems | None = None, skip: tuple[str, ...] = ()) -> None:
    """`reuse: <profile>`: into an empty `folder`, that profile's identical `what` when there is one."""
    if source is None or not source.exists() or not is_empty(folder):
        return
    why_not = adopt(folder, owner, source, problems, problems_of_copy, skip)
    log(folder, f"not reusing {source}: {'; '.join(why_not)}" if why_not else f"copied the identical {what} {source}")
