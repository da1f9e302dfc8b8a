# Every entry point of the project. `make run` and `make test` install what they need first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP_VERSION := 24.3.1

.PHONY: help install system-deps system-deps-runtime run test test-fast docs docs-serve bench images up down backup restore lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==$(PIP_VERSION)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[all,dev]'
	@# The package folders go on sys.path as plain entries, so `python -m autostart` run from the repository
	@# root finds the package and not the same-named top-level folder (a namespace package).
	$(BIN)/python -c 'import pathlib, site; pathlib.Path(site.getsitepackages()[0], "whisper_platform_src.pth").write_text("".join(str(pathlib.Path(d).resolve()) + "\n" for d in ("common", "whisper-faster", "whisperx", "autostart")))'
	@touch $@

install: $(STAMP)  ## create .venv and install the pinned Python packages

system-deps:  ## install the Debian packages the tests drive (nginx, docker.io, chromium, postgresql, prometheus, ...)
	@scripts/install-system-deps.sh all

system-deps-runtime:  ## install only the Debian packages `make run` needs (ffmpeg, nginx, openssl)
	@scripts/install-system-deps.sh runtime

run: system-deps-runtime install  ## start the stack on this machine (Nginx + auto-start proxy + services)
	$(BIN)/python scripts/run_local.py

test: system-deps install  ## install everything, build the docs strictly, run the whole suite
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir .cache/site
	$(BIN)/python -m pytest

test-fast: install  ## the suite without the slow end-to-end stack tests
	$(BIN)/python -m pytest -m "not stack"

docs: install  ## build the operations guide into site/
	$(BIN)/mkdocs build --strict

docs-serve: install  ## serve the guide on http://127.0.0.1:8008
	$(BIN)/mkdocs serve -a 127.0.0.1:8008

bench: system-deps install  ## run every benchmark; results go to docs/benchmarks.md
	$(BIN)/python -m bench

images:  ## build the Docker images (whisper-platform/*: latest + git commit); see docs/deployment.md
	scripts/build-images.sh

up: install  ## Docker deployment: build missing images, create the service containers stopped, start the proxy
	scripts/compose-up.sh

down:  ## stop the Docker deployment
	scripts/compose-down.sh

backup: install  ## Docker deployment: archive the data volumes, configuration, credentials and certificates into BACKUP_DIR (docs/backup.md)
	scripts/backup.sh

restore: install  ## Docker deployment, stopped: restore ARCHIVE=backups/whisper-<time>-<commit>.tar.gz (REPLACE=1 over existing data)
	scripts/restore.sh

lint: install  ## ruff over the whole repository
	$(BIN)/ruff check .

clean:  ## remove .venv, the built guide and the caches
	rm -rf $(VENV) site .cache .pytest_cache test-artifacts
