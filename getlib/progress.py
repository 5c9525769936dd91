"""Progress of a stage's long loops (training steps, pairs), shown in the terminal that runs the
stage and nowhere else: not in the notebook, its rendered copy, or any artifact.

A stage runs inside a notebook kernel (papermill), whose output goes into the notebook. So the
stage command (`getlib.notebook`) opens a side channel with `relay`: a file whose path it hands the
kernel in the environment variable GETLIB_PROGRESS, and whose new bytes it copies to its own stderr,
which DVC shows. On a terminal the copy is the tqdm bar itself (rate, time left); elsewhere (a log
file, CI) it is the bar's latest line once every `interval` seconds and when the bar closes.
`bar` draws into that channel when there is one, on stderr when asked (`python -m getlib.train`),
and nowhere otherwise (a notebook run by hand, a test, the library).
"""
from __future__ import annotations

import codecs
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from functools import lru_cache
from typing import IO

from tqdm.std import tqdm

__all__ = ["ENV", "bar", "relay"]

ENV = "GETLIB_PROGRESS"
COLUMNS = "GETLIB_PROGRESS_COLUMNS"   # the width of the command's terminal (the kernel has none)


@lru_cache(maxsize=None)
def _channel(path: str) -> IO[str]:
    return open(path, "a", buffering=1)   # (line-buffered; tqdm flushes each update)


def bar(total: int, desc: str, unit: str, initial: int = 0, stderr: bool = False) -> tqdm:
    """A tqdm bar: into the stage command's channel when there is one, else on stderr if `stderr`,
    else disabled (every call on it does nothing)."""
    path = os.environ.get(ENV)
    file = _channel(path) if path else sys.stderr if stderr else None
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=file, disable=file is None,
                mininterval=0.5, ncols=int(os.environ.get(COLUMNS, 100)) if path else None, dynamic_ncols=not path)


@contextmanager
def relay(out: IO[str] | None = None, interval: float = 30.0, poll: float = 0.2):
    """Open the channel for the code inside (and the processes it starts) and copy it to `out`
    (default sys.stderr) until the block ends."""
    out = out or sys.stderr
    folder = tempfile.mkdtemp(prefix="getlib-progress-")
    path = os.path.join(folder, "progress")
    open(path, "w").close()
    terminal = out.isatty()
    given = {ENV: path, **({COLUMNS: str(shutil.get_terminal_size().columns)} if terminal else {})}
    before, done = {name: os.environ.get(name) for name in (ENV, COLUMNS)}, threading.Event()
    os.environ.update(given)
    copier = threading.Thread(target=_copy, args=(path, out, terminal, interval, poll, done), daemon=True)
    copier.start()
    try:
        yield path
    finally:
        done.set()
        copier.join()
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        os.remove(path)
        os.rmdir(folder)


def _copy(path: str, out: IO[str], terminal: bool, interval: float, poll: float, done: threading.Event) -> None:
    latest, shown_at = "", time.monotonic()
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode   # (a read may end mid-character)
    with open(path, "rb") as f:   # (bytes: tqdm's \r kept as it is)
        while True:
            finished = done.is_set()   # read once more after the block ended, then stop
            text = decode(f.read(), final=finished)
            if text and terminal:
                out.write(text)
                out.flush()
            elif text:
                # tqdm redraws its line after '\r' and ends a closed bar with '\n': keep the latest
                # line, print it on the interval, and print a closed bar's last line at once
                for piece, end in re.findall(r"([^\r\n]*)([\r\n]?)", text):
                    latest = piece.strip() or latest
                    if end == "\n" and latest:
                        out.write(latest + "\n")
                        latest, shown_at = "", time.monotonic()
                if latest and time.monotonic() - shown_at >= interval:
                    out.write(latest + "\n")
                    shown_at = time.monotonic()
                out.flush()
            if finished:
                return
            time.sleep(poll)
