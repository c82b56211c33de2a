# The two commands a newcomer needs: `make demo` and `make test`. Each builds .venv from the
# lock file on first use, with nothing but Python 3.11 and the package registries.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

DEMO_CUSTOMERS ?= 20000
DEMO_TRIALS    ?= 10

.PHONY: demo test test-fast lint lock bench clean mlflow-ui serve help

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "custlens needs Python 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP) ## generate a sample shop, ingest it, build features, train, score and call the service
	$(BIN)/custlens generate --customers $(DEMO_CUSTOMERS) --seed 7 --dirty-rate 0.01
	$(BIN)/custlens ingest --config configs/sample.yaml
	$(BIN)/custlens kpis
	$(BIN)/custlens features build
	$(BIN)/custlens features apply
	$(BIN)/custlens features materialize
	$(BIN)/custlens features online
	$(BIN)/custlens train all --trials $(DEMO_TRIALS)
	$(BIN)/custlens score
	$(BIN)/custlens kpis --by behaviour
	$(BIN)/python -m serving.demo

test: $(STAMP) ## the whole test suite (unit, integration, service; needs PostgreSQL and Redis)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

# The unit layer only, while editing: tiny hand-made frames, no generated project, no training.
# tests/conftest.py marks tests/integration and tests/service; the -m keeps such a marker out
# even on a test that sits in tests/unit. Two workers sharing tests one by one (the layer is ~80 s
# of CPU, a third of it test_ingest's real ingests); Feast, real Redis and PostgreSQL are integration.
test-fast: $(STAMP) ## the unit layer only, while editing
	$(BIN)/python -m pytest -n 2 --dist load -q -m "not integration and not service" tests/unit

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy custlens features training serving

# Re-pin after changing dependencies in pyproject.toml: resolve into a scratch venv, freeze it.
lock: ## re-pin requirements.lock after changing dependencies in pyproject.toml
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet "setuptools>=75" wheel -e '.[dev]'
	{ echo "# Pinned versions of every package custlens installs (Python 3.11). Regenerate with: make lock"; \
	  .venv-lock/bin/python -m pip freeze --all --exclude-editable | grep -v -E '^(custlens|pip)=='; } > requirements.lock
	rm -rf .venv-lock

bench: $(STAMP) ## the 1M-customer ingest, features, feature store, scoring and HTTP benchmarks
	$(BIN)/python benchmarks/ingest_1m.py
	$(BIN)/python benchmarks/features_1m.py
	$(BIN)/python benchmarks/feature_store_1m.py
	$(BIN)/python benchmarks/score_1m.py
	$(BIN)/python benchmarks/serve_http.py

# The online service on the embedded default (set CUSTLENS_API_KEYS; the demo uses demo-key).
serve: $(STAMP) ## the online service on the embedded default (CUSTLENS_API_KEYS, default demo-key)
	CUSTLENS_API_KEYS=$${CUSTLENS_API_KEYS:-demo-key} $(BIN)/custlens serve

# The MLflow UI over the embedded default's tracking store (runs, trials, baselines, registry).
mlflow-ui: $(STAMP) ## the MLflow UI on http://127.0.0.1:5000 (CUSTLENS_DATA_DIR picks the data folder)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath $(or $(CUSTLENS_DATA_DIR),data))/mlruns/mlflow.db --host 127.0.0.1 --port 5000

clean: ## remove the embedded default's data and test caches
	rm -rf data .pytest_cache

# Every target with a `## ` description, as `make help` prints it.
help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/\1\t\2/' | expand -t 12
