# Every entry point of the project. `make run` and `make test` install what they need first (`make run`: the Python
# environment first, so an unsupported Python is refused before any Debian package is installed).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The Python environment: each role installs only what it runs (scripts/python-env.sh): `deploy` for `make up` and the
# backups, `run` for `make run`, `dev` (everything) for `make install` and the tests. PYTHON picks the interpreter
# (3.11, 3.12 or 3.13; found when unset). Each stamp is remade when the pins change.
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export VENV PYTHON
WHO = make $(or $(firstword $(MAKECMDGOALS)),install)
# GPU=1: `make images` builds the services' CUDA images (whisper-platform/<service>:cuda); docs/deployment.md#gpu-hosts.
GPU ?=

.PHONY: help install system-deps system-deps-runtime run test test-fast test-cuda docs docs-serve bench images up down backup restore lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): pyproject.toml constraints.txt scripts/python-env.sh
	@WHO="$(WHO)" scripts/python-env.sh dev

$(VENV)/.installed-run: pyproject.toml constraints.txt scripts/python-env.sh
	@WHO="$(WHO)" scripts/python-env.sh run

$(VENV)/.installed-deploy: pyproject.toml constraints.txt scripts/python-env.sh
	@WHO="$(WHO)" scripts/python-env.sh deploy

install: $(STAMP)  ## create .venv with everything pinned: the services, the proxy and the development tools

system-deps:  ## install the Debian packages the tests drive (nginx, docker.io, chromium, postgresql, prometheus, ...)
	@WHO="$(WHO)" scripts/install-system-deps.sh all

system-deps-runtime:  ## install only the Debian packages `make run` needs (ffmpeg, nginx, openssl)
	@WHO="$(WHO)" scripts/install-system-deps.sh runtime

run: $(VENV)/.installed-run system-deps-runtime  ## start the stack on this machine (Nginx + auto-start proxy + services)
	$(BIN)/python scripts/run_local.py

test: system-deps install  ## install everything, build the docs strictly, run the whole suite (two parts at once: scripts/run_suite.py)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir .cache/site
	$(BIN)/python scripts/run_suite.py

test-fast: install  ## the suite without the slow end-to-end stack tests
	$(BIN)/python -m pytest -m "not stack"

test-cuda: system-deps install  ## build the CUDA images (make images GPU=1, several GB) and check their libraries and the GPU compose files
	RUN_CUDA_IMAGES=1 $(BIN)/python -m pytest -m cuda tests/platforms

docs: install  ## build the operations guide into site/
	$(BIN)/mkdocs build --strict

docs-serve: install  ## serve the guide on http://127.0.0.1:8008
	$(BIN)/mkdocs serve -a 127.0.0.1:8008

bench: system-deps install  ## run every benchmark; results go to docs/benchmarks.md
	$(BIN)/python -m bench

images:  ## build the Docker images (whisper-platform/*: latest + git commit; GPU=1: the CUDA ones, :cuda); see docs/deployment.md
	IMAGE_VARIANT=$(if $(filter 1 yes true,$(GPU)),cuda,$(or $(IMAGE_VARIANT),cpu)) scripts/build-images.sh

up: $(VENV)/.installed-deploy  ## Docker deployment: build missing images, create the service containers stopped, start the proxy
	scripts/compose-up.sh

down:  ## stop the Docker deployment
	scripts/compose-down.sh

backup: $(VENV)/.installed-deploy  ## Docker deployment: archive the data volumes, configuration, credentials and certificates into BACKUP_DIR (docs/backup.md)
	scripts/backup.sh

restore: $(VENV)/.installed-deploy  ## Docker deployment, stopped: restore ARCHIVE=backups/whisper-<time>-<commit>.tar.gz (REPLACE=1 over existing data)
	scripts/restore.sh

lint: install  ## ruff over the whole repository
	$(BIN)/ruff check .

clean:  ## remove .venv, the built guide and the caches
	rm -rf $(VENV) site .cache .pytest_cache test-artifacts
