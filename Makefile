# Two commands do all set-up on a fresh machine (Python 3.11, no GPU):
#   make demo   - create/reuse .venv, generate a synthetic BIDS dataset, segment it with the
#                 demo bundle (participant level), then the group level; prints the reports
#   make test   - create/reuse .venv, run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo

.PHONY: venv demo test clean container container-smoke

$(BIN)/stroke-lesion-app: setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/stroke-lesion-app

demo: venv
	$(BIN)/stroke-lesion-model synthesize $(DEMO)/bids --subjects 2 --seed 0 --resolution 2 --overwrite
	$(BIN)/stroke-lesion-app $(DEMO)/bids $(DEMO)/out participant -w $(DEMO)/work --nprocs 2
	$(BIN)/stroke-lesion-app $(DEMO)/bids $(DEMO)/out group
	@echo "Reports: $(DEMO)/out/sub-01.html, $(DEMO)/out/sub-02.html and $(DEMO)/out/group/group.html (open in a browser)"
	@echo "Demo bundle: synthetic-data demo, not for research or clinical use."

test: venv
	PYTHONHASHSEED=0 $(BIN)/python -m pytest -n 2 tests

# Container image with podman (root, Debian host; no Docker Hub needed): README "Containers"
VARIANT ?= cuda
IMAGE   ?= stroke-lesion-app:latest
container:
	VARIANT=$(VARIANT) bash scripts/build_container.sh

container-smoke:
	bash scripts/container_smoke_test.sh $(IMAGE)

clean:
	rm -rf $(DEMO) .pytest_cache
