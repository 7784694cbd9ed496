# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# Every target below is idempotent: running it again reuses what exists.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export FLASK_APP := wsgi:app

.PHONY: run test lint deps assets system-packages migrate admin bench clean litellm

run: deps assets
	$(PY) -m services.launcher

test: deps assets system-packages litellm lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: deps  ## the lint gate of `make test` (configured in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test]'
	touch $@

# LiteLLM's proxy is the third-party OpenAI-compatible server the gateway tests talk to
# (offline, with mock responses). It gets its own venv because its pins would fight ours.
LITELLM_VENV := .venv-litellm
LITELLM_VERSION := 1.102.4
litellm: $(LITELLM_VENV)/.installed-$(LITELLM_VERSION)

$(LITELLM_VENV)/.installed-$(LITELLM_VERSION):
	test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install --quiet --upgrade pip
	$(LITELLM_VENV)/bin/pip install --quiet 'litellm[proxy]==$(LITELLM_VERSION)'
	touch $@

# htmx comes from the npm registry (pinned in package.json) and is copied under static/vendor,
# which git ignores: no third-party library file is committed.
assets: static/vendor/.installed

static/vendor/.installed: package.json package-lock.json services/webui/markdown.py | deps
	npm ci --no-audit --no-fund --silent
	mkdir -p static/vendor
	cp node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js
	cp node_modules/htmx.org/dist/ext/hx-sse.min.js static/vendor/hx-sse.min.js
	$(PY) -m services.webui.markdown --css > static/vendor/pygments.css
	touch $@

# Debian packages the tests run for real: Chromium (browser tests) and redis-server (the
# scale-out profile: several workers and hosts sharing one Redis).
SYSTEM_PACKAGES := chromium redis-server
system-packages:
	@missing=""; for p in $(SYSTEM_PACKAGES); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

migrate: deps  ## apply migrations only (make run does this itself)
	$(VENV)/bin/flask db upgrade

bench: deps system-packages  ## prints figures; run_engine.py and load.py start a redis-server
	$(PY) bench/relay.py
	$(PY) bench/sessions.py
	$(PY) bench/render.py
	$(PY) bench/run_engine.py
	$(PY) bench/page_stream.py
	$(PY) bench/openai_path.py
	$(PY) bench/load.py
	$(PY) bench/io_floor.py
	$(PY) bench/event_parse.py

clean:
	rm -rf $(VENV) node_modules static/vendor
