"""The project's foundation: one source of truth for the environment, and CI = the README's command."""
import re
import tomllib

import yaml
from conftest import ROOT



def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_dependencies_are_pinned_exactly():
    project = pyproject()
    for req in project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.+]*", req), f"not pinned exactly: {req}"
    pins = dict(r.split("==") for r in project["dependencies"])
    assert (pins["torch"], pins["torchvision"]) == ("2.14.1", "0.29.1")


def test_environment_yml_mirrors_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    major, minor = python.split("=")[1].split(".")[:2]
    low = re.match(r">=(\d+)\.(\d+)", pyproject()["requires-python"]).groups()
    assert (int(major), int(minor)) >= tuple(map(int, low))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    # conda installs this package with the same extras as `make setup`, so the pins come from
    # pyproject.toml alone; any pin written here as well must agree with it
    extras = re.search(r"'\.\[(\w+)\]'", (ROOT / "Makefile").read_text()).group(1)
    assert f"-e .[{extras}]" in pip and extras in pyproject()["optional-dependencies"]
    pins = dict(r.split("==") for r in pyproject()["dependencies"] + pyproject()["optional-dependencies"][extras])
    for line in pip:
        if "==" in line:
            name, version = line.split("==")
            assert pins.get(name) == version, f"environment.yml pins {line}, pyproject.toml {pins.get(name)}"


def test_ci_runs_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci
    assert "make repro" in readme
