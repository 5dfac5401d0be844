# The two commands of the README: `make run` (the main job) and `make test`.
# Both create .venv with the pinned environment first if it is missing or out of date.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
RUN_DIR ?= runs/default

.PHONY: setup run test test-browser notebooks clean
setup: $(STAMP)

# TORCH_INDEX: where to get torch first, e.g. the small CPU build on Linux:
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_VERSION := $(shell sed -n 's/^torch==//p' requirements.lock)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || { echo "==> creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> upgrading pip in $(VENV)"
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@if [ -n "$(TORCH_INDEX)" ]; then \
	  echo "==> installing torch==$(TORCH_VERSION) from $(TORCH_INDEX)"; \
	  $(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION) --index-url $(TORCH_INDEX); fi
	@echo "==> installing the pinned packages of requirements.lock (the first time takes" \
	  "minutes: torch alone is hundreds of MB)"
	@$(BIN)/python -m pip install --quiet --progress-bar off -r requirements.lock
	@echo "==> installing midilstm itself (editable) and the notebooks' Jupyter kernel"
	@$(BIN)/python -m pip install --quiet --no-deps -e .
	@$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@echo "==> compiling the generation step (numba, once; later runs load it from the cache)"
	@$(BIN)/python -c "from midilstm.generate import warm_up; warm_up(verbose=False)"
	@rm -f $(VENV)/.installed-* && touch $@
	@echo "==> $(VENV) is ready"

run: $(STAMP)  ## the notebook series on the default piece, into $(RUN_DIR)
	$(BIN)/python -m midilstm run --out $(RUN_DIR) --force  # a new run replaces the last one

test: $(STAMP)  ## unit tests, then the committed notebooks under strict nbval
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest --nbval notebooks --nbval-sanitize-with notebooks/nbval_sanitize.cfg

test-browser: $(STAMP)  ## the browser test alone (make test runs it too): 01 and 04 in JupyterLab
	$(BIN)/python -m pytest tests/browser

notebooks: $(STAMP)  ## the maintainer's: re-execute the notebooks in place after an intended change
	$(BIN)/python -m midilstm refresh-notebooks

clean:
	rm -rf $(VENV) runs
