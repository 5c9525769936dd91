"""The rendered copy of an executed notebook (getlib.notebook): Markdown with the pictures it shows,
nothing that varies between runs or machines, the same bytes twice, and no stale pictures."""
import base64
import io

import nbformat
import pytest
from PIL import Image

from getlib.notebook import render_markdown


def _png(colour: str) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _executed(path, pictures=("red",)):
    nb = nbformat.v4.new_notebook(metadata={"papermill": {"duration": 1.234, "start_time": "2026-12-01T07:00:00"}})
    nb.cells.append(nbformat.v4.new_markdown_cell("# Stage 9: a story"))
    cell = nbformat.v4.new_code_cell("show()")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="profile demo\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="/root/somewhere/lib.py:1: Warning\n")]
    cell.outputs.append(nbformat.v4.new_output("execute_result", execution_count=1, data={
        "text/html": "<div>\n<style scoped>\n    .dataframe th { vertical-align: top; }\n</style>\n<table></table>\n</div>",
        "text/plain": "  table"}))
    cell.outputs += [nbformat.v4.new_output("display_data", data={"image/png": _png(c), "image/jpeg": _png(c),
                                                                  "text/plain": "<Figure>"}) for c in pictures]
    nb.cells.append(cell)
    nbformat.write(nb, str(path))
    return path


def test_a_rendering_shows_outputs_and_pictures_but_no_stderr_or_timings(tmp_path):
    written = render_markdown(_executed(tmp_path / "run.ipynb"), tmp_path / "out" / "09_story.md")
    md = (tmp_path / "out" / "09_story.md").read_text()
    assert "# Stage 9: a story" in md and "show()" in md and "profile demo" in md
    assert "/root/somewhere" not in md and "1.234" not in md and "2026" not in md
    assert "<table></table>" in md and "<style" not in md and "vertical-align" not in md
    pictures = sorted((tmp_path / "out" / "09_story_files").iterdir())
    assert [p.suffix for p in pictures] == [".png"]            # the jpeg twin of the png is not written
    assert f"]({pictures[0].parent.name}/{pictures[0].name})" in md   # referenced relative to the .md
    assert set(written) == {tmp_path / "out" / "09_story.md", *pictures}


def test_rendering_again_gives_the_same_bytes_and_drops_stale_pictures(tmp_path):
    out = tmp_path / "09_story.md"
    render_markdown(_executed(tmp_path / "a.ipynb", ("red", "blue")), out)
    assert len(list((tmp_path / "09_story_files").iterdir())) == 2
    render_markdown(_executed(tmp_path / "b.ipynb"), out)
    first = out.read_bytes(), sorted(p.read_bytes() for p in (tmp_path / "09_story_files").iterdir())
    render_markdown(_executed(tmp_path / "c.ipynb"), out)
    again = out.read_bytes(), sorted(p.read_bytes() for p in (tmp_path / "09_story_files").iterdir())
    assert first == again and len(first[1]) == 1


def test_the_rendered_copy_must_be_markdown(tmp_path):
    with pytest.raises(ValueError, match="must be a .md file"):
        render_markdown(_executed(tmp_path / "a.ipynb"), tmp_path / "story.ipynb")
