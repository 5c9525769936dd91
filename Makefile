# Every target is idempotent: `setup` reinstalls only when pyproject.toml changed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
# dvc runs papermill from the venv
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup test repro pull report profile dvc interim lab clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q

# `make repro` runs the active params.yaml (`make repro PROFILE=smoke` switches to a profile first),
# then sets this machine's numbers beside the committed ones (the report; not an error if they differ).
repro: setup $(if $(PROFILE),profile)
	dvc repro
	-$(BIN)/python -m getlib.report

# The active profile's committed artifacts from the store (store/, the repository's DVC remote), with
# the bytes of dvc.lock: the stages it records (a study's lock records its upstream, check to pairs).
pull: setup $(if $(PROFILE),profile)
	dvc pull -r store $$($(BIN)/python -c "import yaml; print(' '.join(yaml.safe_load(open('dvc.lock'))['stages']))")
	$(BIN)/python -m getlib.stages.distill params.yaml --adopt-pulled

# This machine's results/<profile>/ against the committed ones, metric by metric, with tolerances.
report: setup
	$(BIN)/python -m getlib.report $(if $(PROFILE),--profile $(PROFILE))

# A profile is params.yaml and, where its artifacts are in the store, its lock (profiles/<name>.lock),
# copied when switching to it (staying on it keeps the runs dvc.lock has recorded since).
profile:
	@test -f profiles/$(PROFILE).yaml || { echo "no profile '$(PROFILE)': choose one of $$(ls profiles/*.yaml | xargs -n1 basename | sed 's/.yaml//' | tr '\n' ' ')"; exit 1; }
	cmp -s profiles/$(PROFILE).yaml params.yaml || { cp profiles/$(PROFILE).yaml params.yaml; \
	  if test -f profiles/$(PROFILE).lock; then cp profiles/$(PROFILE).lock dvc.lock; fi; }

# Any DVC command from the project's environment, without activating it:
# make dvc ARGS="exp run -S distill.lr=1e-3"
dvc: setup
	dvc $(ARGS)

# A long study's finished runs, evaluated and tabulated while the rest still train (make interim PROFILE=claims)
interim: setup
	$(BIN)/python -m getlib.stages.interim $(if $(PROFILE),profiles/$(PROFILE).yaml,params.yaml)

# JupyterLab refuses to run as root unless told: containers and CI run as root, so say it there.
lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
