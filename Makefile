# fraudscore developer workflow. `make help` lists the targets; each bootstraps what it needs.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# uv: the one on PATH, else a private copy in .tools/ installed from PyPI with pip.
UV ?= $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
VENV_STAMP := .venv/.synced-$(shell cksum uv.lock 2>/dev/null | cut -d' ' -f1)

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	@echo "uv not found: installing it into .tools/ from PyPI"
	python3 -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv

$(VENV_STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked
	@rm -f .venv/.synced-* && touch $@

.PHONY: sync
sync: $(VENV_STAMP) ## Create or update the virtual environment from uv.lock

.PHONY: test
test: $(VENV_STAMP) ## Run the whole test suite (unit; integration and e2e when PostgreSQL is reachable)
	$(UV) run pytest

.PHONY: lint
lint: $(VENV_STAMP) ## ruff (lint + format check), mypy --strict, and the architecture contracts
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run lint-imports --no-cache
	$(MAKE) lint-deploy

FS := $(UV) run python -m fraudscore_adapters

.PHONY: data
data: $(VENV_STAMP) ## Make sure a dataset exists: real BAF in data/raw, else generate the synthetic one
	$(FS) data

.PHONY: train
train: $(VENV_STAMP) ## Train a new model version into data/model_artifacts, make it current (FORCE=1: even if one exists)
	$(FS) train $(if $(FORCE),--force)

.PHONY: run
run: $(VENV_STAMP) ## The main job: data and model if missing, then serve on 127.0.0.1:8000
	$(FS) run

.PHONY: serve
serve: $(VENV_STAMP) ## Just serve the API (needs a trained model)
	$(FS) serve

.PHONY: migrate
migrate: $(VENV_STAMP) ## Apply database migrations (needs DATABASE_URL)
	$(FS) migrate

.PHONY: rollback
rollback: $(VENV_STAMP) ## Roll back the newest migration (needs DATABASE_URL)
	$(FS) rollback

.PHONY: load-features
load-features: $(VENV_STAMP) ## COPY the dataset's cleaned features into PostgreSQL (needs DATABASE_URL)
	$(FS) load-features

.PHONY: score
score: $(VENV_STAMP) ## Score a BAF file offline (INPUT=in.csv|.parquet OUT=out.parquet|.csv; RECORD=1, DROP_INVALID=1)
	$(FS) score "$(INPUT)" --out "$(OUT)" $(if $(RECORD),--record) $(if $(DROP_INVALID),--drop-invalid)

.PHONY: key
key: $(VENV_STAMP) ## Create an API key, printed once (NAME=me; SCOPES="predict admin"; DATABASE_URL: in the db)
	$(FS) keys create --name "$(or $(NAME),$(USER),me)" $(foreach s,$(or $(SCOPES),predict),--scope $(s))

.PHONY: keys
keys: $(VENV_STAMP) ## List API keys: id, name, scopes, created, last used, revoked
	$(FS) keys list

.PHONY: revoke-key
revoke-key: $(VENV_STAMP) ## Revoke an API key (ID=<12 hex digits>); servers stop taking it within 2 s
	$(FS) keys revoke "$(ID)"

.PHONY: model-pin
model-pin: $(VENV_STAMP) ## Print the SHA-256 to pin the current model with (FRAUDSCORE_MODEL_SHA256)
	$(FS) model-pin

.PHONY: models
models: $(VENV_STAMP) ## List the model versions: current, previous, model, threshold, pin
	$(FS) model list

.PHONY: model-use
model-use: $(VENV_STAMP) ## Point current at a model version (VERSION=...); running servers follow within 1 s
	$(FS) model use "$(VERSION)"

.PHONY: model-rollback
model-rollback: $(VENV_STAMP) ## Point current back at the previous model version; running servers follow
	$(FS) model rollback

.PHONY: eda
eda: $(VENV_STAMP) ## Run the EDA notebook on the full dataset; writes reports/eda.html
	$(UV) run python notebooks/run_eda.py

.PHONY: lint-deploy
lint-deploy: $(VENV_STAMP) ## hadolint (Containerfile), compose spec, actionlint, deploy consistency
	$(UV) run pytest -q -p no:cacheprovider tests/unit/test_deploy.py

.PHONY: format
format: $(VENV_STAMP) ## Apply ruff's fixes and formatting
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

.PHONY: clean
clean: ## Remove caches and the virtual environment (keeps data and artifacts)
	rm -rf .venv .tools .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
