# Two commands for a fresh clone: `make train` and `make test`.
# Each creates .venv (CPU torch pinned to the local wheel) when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The main job is the real job: MMSSL's preset on TikTok to early stopping (see README for the
# time it takes). Extra `mmssl-pyg train` arguments go in TRAIN_ARGS, e.g. TRAIN_ARGS='--epochs 5'.
TRAIN_ARGS ?=
TEST_ARGS  ?=
# make mutate: MUTATE selects mutants by name pattern (default: every one not yet run),
# MUTATE_JOBS the parallel test processes.
MUTATE      ?=
MUTATE_JOBS ?= 1

.PHONY: venv train test lint clean movielens-100k mutate

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Main job: train MMSSL on the bundled TikTok data and print val-selected test metrics.
train: $(STAMP)
	$(BIN)/mmssl-pyg train $(TRAIN_ARGS)

# Lint, then the test suite (the command CI runs).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(TEST_ARGS)

# Build MovieLens-100K with text features on this machine (never committed: its terms forbid
# redistribution). recbole is installed without its dependencies: only its data files are read.
ML100K := datasets/movielens-100k/raw/train.json
movielens-100k: $(ML100K)

$(ML100K): | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[features]' torch==2.13.0
	$(BIN)/python -m pip install --quiet --no-deps recbole==1.2.1
	$(BIN)/mmssl-pyg build-dataset --recipe movielens-100k

lint: $(STAMP)
	$(BIN)/ruff check .

# Mutation testing of mmssl_pyg/nn/, the models, training/ and data/ with their fast tests
# ([mutmut] in setup.cfg), then the report in benchmarks/results/mutation/. Hours on 2 cores
# (one module: MUTATE='"mmssl_pyg.training.sampler.*"'); resumable (mutants already run keep
# their result). Not part of `make test` / CI.
$(VENV)/.mutate-installed: $(STAMP) setup.cfg
	$(BIN)/python -m pip install --quiet -e '.[mutate]'
	touch $@

mutate: $(VENV)/.mutate-installed
	nice -n 15 $(BIN)/mutmut run --max-children $(MUTATE_JOBS) $(MUTATE)
	$(BIN)/python -m benchmarks.mutation_report

clean:
	rm -rf $(VENV) datasets/*/processed runs wandb mutants
