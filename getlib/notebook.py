"""A stage's notebook, executed and rendered: the command of every dvc.yaml stage.

    python -m getlib.notebook NOTEBOOK EXECUTED RENDERED [-p NAME VALUE ...]

papermill executes NOTEBOOK (with the string parameters NAME = VALUE) into EXECUTED, a notebook with
its outputs under work/<profile>/notebooks/ (git-ignored; open it in JupyterLab). Its cells and
outputs are then rendered to RENDERED, Markdown under results/<profile>/notebooks/ with the pictures
in a folder beside it (<stem>_files/), committed: each stage's story, readable in the repository
without running anything. The rendering leaves out what says where and when it ran: papermill's
timings (notebook metadata) and the stderr streams (warnings and logs, which name local paths; they
stay in the executed notebook). The notebooks show no timings of their own but the measured speeds
of the evaluation (images/s), as its tables do. Progress bars of long loops (training, pairs) go to
this command's stderr, the terminal DVC shows, and never into the notebook (`getlib.progress`).

Publishing. Every notebook's `parameters` cell holds `publish = False`, and this command alone
executes it with `publish = True` (a bool: `-p publish ...` is refused, the command always
publishes). The notebook hands it to `set_publish`, and the stage functions write their
results/<profile>/ files only while `publishing()` is true. So a notebook run by hand (JupyterLab)
does its stage's work (work/<profile>/ is DVC's: a stage's artifacts there are the same bytes each
run) but writes nothing under results/: `git status` stays clean. The figures stage, whose notebook
shows the files it writes, then writes them under work/<profile>/unpublished/ instead. Stage
functions called from Python (tests, `getlib.stages.interim`, a second worker) publish, as before.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from getlib import progress
from getlib.io import atomic_write, remove_owned

__all__ = ["render_markdown", "set_publish", "publishing", "unpublished", "main"]

_publish = True   # stage functions called from Python publish; a notebook sets its `publish` parameter


def set_publish(publish: bool) -> None:
    """Whether the stage functions of this process write results/<profile>/ (the notebook's
    `publish` parameter: True only under the stage command, `main`)."""
    global _publish
    if not isinstance(publish, bool):   # (a string 'False' would be true)
        raise TypeError(f"publish must be True or False, got {publish!r}")
    _publish = publish


def publishing() -> bool:
    """Whether a stage function writes its results/<profile>/ files now (`set_publish`)."""
    return _publish


@contextmanager
def unpublished():
    """Run stage functions without writing results/<profile>/ (as a notebook run by hand does)."""
    before = _publish
    set_publish(False)
    try:
        yield
    finally:
        set_publish(before)


def render_markdown(executed: str | Path, rendered: str | Path) -> list[Path]:
    """Render the executed notebook to `rendered` (.md) and its pictures to <stem>_files/ beside it,
    replacing that folder whole (it holds only this notebook's pictures); returns the files written."""
    import nbformat
    from nbconvert import MarkdownExporter

    rendered = Path(rendered)
    if rendered.suffix != ".md":
        raise ValueError(f"{rendered}: the rendered copy must be a .md file")
    pictures = rendered.with_name(f"{rendered.stem}_files")
    notebook = nbformat.read(str(executed), as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    body, resources = MarkdownExporter().from_notebook_node(notebook, resources={"output_files_dir": pictures.name})
    body = re.sub(r"<style scoped>.*?</style>\n?", "", body, flags=re.S)   # pandas' CSS: text where it is not read
    rendered.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=rendered.parent, prefix=f".{pictures.name}."))
    written = []
    try:
        for name, data in sorted(resources["outputs"].items()):   # name = <stem>_files/output_<cell>_<output>.png
            if f"]({name})" not in body:                          # a picture's other formats (a jpeg beside its png)
                continue
            (staging / Path(name).name).write_bytes(data)
            written.append(pictures / Path(name).name)
        remove_owned(pictures, rendered.parent)
        os.replace(staging, pictures)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write(rendered, lambda f: f.write(body.encode()))
    return [rendered, *written]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", help="the notebook to execute (notebooks/NN_stage.ipynb)")
    parser.add_argument("executed", help="where the executed notebook goes (.ipynb)")
    parser.add_argument("rendered", help="where its Markdown rendering goes (.md)")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a parameter of the notebook's parameters cell (a string); publish is always True")
    args = parser.parse_args(argv)
    parameters = dict(args.p)
    if "publish" in parameters:
        parser.error("-p publish: the stage command always publishes (publish = True); "
                     "run the notebook by hand to leave results/ as it is")
    import papermill

    Path(args.executed).parent.mkdir(parents=True, exist_ok=True)
    with progress.relay():   # the stage's progress bars, in this terminal (not in the notebook)
        papermill.execute_notebook(args.notebook, args.executed, parameters={**parameters, "publish": True},
                                   progress_bar=False)
    for path in render_markdown(args.executed, args.rendered):
        print(path)


if __name__ == "__main__":
    main()
