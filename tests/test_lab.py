"""JupyterLab serves the notebooks: `make lab`'s command starts (as root too, as in containers and CI)
and its REST API lists notebooks/ and returns a notebook."""
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_make_lab_passes_allow_root_only_to_root():
    out = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if "jupyter lab" in line)
    assert ("--allow-root" in line) == (os.geteuid() == 0) and "--notebook-dir=notebooks" in line


def test_jupyterlab_serves_the_notebooks(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}", "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                get(f"{base}/api/status", token)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"jupyter lab exited: {server.stdout.read()[-3000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("jupyter lab did not answer within 60 s")
        listing = get(f"{base}/api/contents/notebooks", token)
        names = sorted(item["name"] for item in listing["content"])
        assert names == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
        notebook = get(f"{base}/api/contents/notebooks/05_distill.ipynb", token)["content"]
        assert notebook["metadata"]["kernelspec"]["name"] == "python3"
        assert any("parameters" in c["metadata"].get("tags", []) for c in notebook["cells"])
    finally:
        server.terminate()
        server.wait(timeout=30)
