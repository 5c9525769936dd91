"""Atomic writes and checksums: a file is either absent or complete, never half-written."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["atomic_write", "atomic_write_json", "atomic_write_csv", "atomic_torch_save", "atomic_save_npz",
           "file_sha256", "first_line", "atomic_copy", "atomic_copytree", "inside", "remove_owned", "read_csv", "read_json",
           "cell_text", "write_results"]


def atomic_write(path: str | Path, write: Callable[[Any], None],
                 before_rename: Callable[[Path], None] | None = None) -> None:
    """Call write(file object) on a temporary file beside `path`, fsync, then rename it onto `path`
    (calling before_rename(temporary path) just before the rename, e.g. to record its checksum)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def atomic_torch_save(obj: Any, path: str | Path, before_rename: Callable[[Path], None] | None = None) -> None:
    atomic_write(path, lambda f: torch.save(obj, f), before_rename)


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Like numpy.savez (np.load reads it), but byte-identical for identical arrays: numpy stamps
    each member with the current time, which would make DVC see a changed output on every run."""
    def write(f) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            for name, array in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=False)
                z.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())
    atomic_write(path, write)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def first_line(e: BaseException) -> str:
    """An exception's first line for an error message (its type when it has no text)."""
    lines = str(e).splitlines()
    return lines[0] if lines else type(e).__name__


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy `src` to `dst` through a temporary file and a rename."""
    def write(f) -> None:
        with open(src, "rb") as s:
            for chunk in iter(lambda: s.read(1 << 20), b""):
                f.write(chunk)
    atomic_write(dst, write)


def atomic_copytree(src: str | Path, dst: str | Path, skip: tuple[str, ...] = ()) -> None:
    """Copy the folder `src` to `dst` (which must not exist) through a temporary sibling and a rename,
    leaving out files named in `skip` (e.g. caches that must be rebuilt)."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} exists: copy into a new folder")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}."))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True, symlinks=True, ignore=shutil.ignore_patterns(*skip))
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def inside(path: str | Path, base: str | Path) -> bool:
    """Whether `path` lies strictly inside `base`, after resolving '..' and symbolic links."""
    path, base = Path(path).resolve(), Path(base).resolve()
    return path != base and base in path.parents


def remove_owned(path: str | Path, owner: str | Path) -> None:
    """Delete the folder `path`, which must lie inside `owner` (the folder a stage owns); anything
    else is refused. A symbolic link is removed as a link, never followed."""
    path = Path(path)
    base = Path(owner).resolve()
    where = path.parent.resolve() / path.name   # the entry itself: a link is judged by where it lies
    if base not in where.parents or (not path.is_symlink() and not inside(path, owner)):
        raise ValueError(f"refusing to delete {path}: it is not inside {owner}, the folder this stage owns")
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------

def atomic_write_csv(rows: list[dict], path: str | Path, columns: list[str] | None = None) -> None:
    """rows -> a CSV file with a header (`columns`, or the first row's keys), written atomically."""
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=list(rows[0]) if columns is None else columns)
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_json(path: str | Path) -> list:
    """A JSON list, or [] when the file does not exist (an optional table)."""
    return json.loads(Path(path).read_text()) if Path(path).exists() else []


def cell_text(v: object) -> str:
    """A table cell as the Markdown tables and the notebooks show it: a float to 4 significant digits,
    "-" where there is no value (None, NaN, a row without the column: not applicable)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_results(rows: list[dict], folder: str | Path, name: str, title: str, note: str = "") -> None:
    """rows -> folder/name.json, name.csv and name.md (a Markdown table under `title`, cells by
    `cell_text`)."""
    folder = Path(folder)
    atomic_write_json(folder / f"{name}.json", rows)
    cols = list(dict.fromkeys(k for r in rows for k in r))

    atomic_write_csv(rows, folder / f"{name}.csv", cols)
    lines = [f"# {title}", ""] + ([note, ""] if note else []) + ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell_text(r.get(c)) for c in cols) + " |" for r in rows]
    atomic_write(folder / f"{name}.md", lambda f: f.write(("\n".join(lines) + "\n").encode()))
