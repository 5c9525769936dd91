"""Progress bars reach the stage command's terminal and nothing else (getlib.progress)."""
import io
import os
import subprocess
import sys
import time

from getlib import progress
from conftest import ROOT


def test_a_bar_in_a_process_the_stage_started_reaches_the_commands_output_as_one_line_per_bar():
    """The kernel (here: a child process) inherits the channel; where the command's output is not a
    terminal, each closed bar becomes one line, its last."""
    out = io.StringIO()
    child = ("from getlib.progress import bar\n"
             "for name in ('teacher', 'GET-P/2'):\n"
             "    b = bar(40, name, 'step')\n"
             "    for _ in range(40): b.update(1)\n"
             "    b.close()\n")
    with progress.relay(out, interval=3600):
        subprocess.run([sys.executable, "-c", child], cwd=ROOT, check=True)
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["teacher", "GET-P/2"]
    assert all("100%|" in line and "40/40 [" in line for line in lines)
    assert progress.ENV not in os.environ   # closed with the block


def test_a_long_bar_prints_its_latest_line_on_the_interval():
    out = io.StringIO()
    with progress.relay(out, interval=0.0, poll=0.01):
        b = progress.bar(3, "pairs@uncond", "pair")   # (draws 0/3 at once)
        deadline = time.monotonic() + 10
        while "0/3" not in out.getvalue() and time.monotonic() < deadline:   # one interval passes
            time.sleep(0.01)
        b.update(1)
        b.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("pairs@uncond:   0%") and lines[-1].startswith("pairs@uncond:  33%")   # (closed at 1 of 3)


def test_without_a_channel_a_bar_shows_nothing_unless_asked_for_stderr(capsys):
    b = progress.bar(5, "quiet", "step")
    b.update(5)
    b.close()
    assert capsys.readouterr().err == ""
    b = progress.bar(5, "loud", "step", stderr=True)
    b.update(5)
    b.close()
    assert "loud: 100%" in capsys.readouterr().err
