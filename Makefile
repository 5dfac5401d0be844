# The two commands of the README: `make run` (the main job) and `make test`.
# Both create .venv with the pinned environment first if it is missing or out of date.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
RUN_DIR ?= runs/default

.PHONY: setup run test notebooks clean
setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)  ## the notebook series on the default piece, into $(RUN_DIR)
	$(BIN)/python -m midilstm run --out $(RUN_DIR)

test: $(STAMP)  ## unit tests, then the committed notebooks under strict nbval
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest --nbval notebooks --nbval-sanitize-with notebooks/nbval_sanitize.cfg

notebooks: $(STAMP)  ## re-execute the notebooks in place after an intended change
	$(BIN)/python -m midilstm refresh-notebooks

clean:
	rm -rf $(VENV) runs
