# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates its own virtual environment in .venv (torch's CPU build is pinned first,
# so that the package's torch range is already satisfied and no CUDA build is pulled).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0
OUT ?= lsqface-demo

.PHONY: venv demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e '.[test,video,train,detect,identity]'
	touch $@

venv: $(BIN)/.installed

# The main job on the built-in default: the shipped model reconstructs matplotlib's Grace Hopper
# photo (mesh, parameters, pictures in $(OUT)/), and the face model's own pictures go to $(OUT)/model/.
demo: venv
	$(BIN)/lsqface model build
	$(BIN)/lsqface reconstruct --detect -o $(OUT)
	$(BIN)/lsqface model show -o $(OUT)/model

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/bench_model.py

clean:
	rm -rf $(VENV) $(OUT)
