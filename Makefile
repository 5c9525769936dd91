# Every target is idempotent: `setup` reinstalls only when pyproject.toml changed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)   # dvc runs papermill from the venv

.PHONY: setup test repro profile interim lab clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q

# `make repro` runs the active params.yaml; `make repro PROFILE=smoke` switches to a profile first.
repro: setup $(if $(PROFILE),profile)
	dvc repro

profile:
	@test -f profiles/$(PROFILE).yaml || { echo "no profile '$(PROFILE)': choose one of $$(ls profiles | sed 's/.yaml//' | tr '\n' ' ')"; exit 1; }
	cp profiles/$(PROFILE).yaml params.yaml

# A long study's finished runs, evaluated and tabulated while the rest still train (make interim PROFILE=claims)
interim: setup
	$(BIN)/python -m getlib.stages.interim $(if $(PROFILE),profiles/$(PROFILE).yaml,params.yaml)

# JupyterLab refuses to run as root unless told: containers and CI run as root, so say it there.
lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
