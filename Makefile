# Every entry point a person or CI uses. Each target installs what it needs and is idempotent.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export CDK_DISABLE_CLI_TELEMETRY := true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PYTHONDONTWRITEBYTECODE := 1

VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .make
CDK := npx --no-install cdk
CDK_ARGS ?=

# Python 3.12 (Nova Sonic needs it): pyenv's copy when there is one, else a plain python3.12.
PYTHON312 ?= $(shell for p in "$$(pyenv root 2>/dev/null)"/versions/3.12.*/bin/python3.12; do [ -x "$$p" ] && c="$$p"; done; \
	[ -n "$$c" ] && echo "$$c" || command -v python3.12)

# Debian packages the local mode and the tests need: command -> package. ip, nft and iptables make
# bench.impaired_network's namespaces, loss and delay queue (they live in sbin, hence SYSTEM_PATH).
SYSTEM_PACKAGES := turnserver:coturn espeak-ng:espeak-ng chromium:chromium ip:iproute2 nft:nftables iptables:iptables
SYSTEM_PATH := $(PATH):/usr/sbin:/sbin

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMPS):
	@mkdir -p $@

$(STAMPS)/venv: requirements.txt requirements-dev.txt agent/requirements.txt | $(STAMPS)
	@if [ -z "$(PYTHON312)" ]; then echo "error: Python 3.12 not found (install it with pyenv or your package manager)" >&2; exit 1; fi
	@[ -x $(PY) ] || $(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

$(STAMPS)/node: package.json package-lock.json | $(STAMPS)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

.PHONY: system-deps
system-deps: ## Install the Debian packages local mode and the tests need (coturn, espeak-ng, chromium, nftables, ...)
	@missing=""; for pair in $(SYSTEM_PACKAGES); do PATH="$(SYSTEM_PATH)" command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

.PHONY: setup
setup: $(STAMPS)/venv $(STAMPS)/node system-deps ## Create .venv, install npm packages and system packages

.PHONY: lint
lint: $(STAMPS)/venv ## ruff and mypy
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

.PHONY: openapi
openapi: $(STAMPS)/venv ## Regenerate docs/openapi.json from the broker API's code
	$(PY) -m broker.api.openapi --write

.PHONY: test
test: setup web lint cfn-lint ## Lint, synth + cfn-lint, check the OpenAPI document, then run every test
	$(PY) -m broker.api.openapi --check
	$(PY) -m pytest

.PHONY: synth
synth: $(STAMPS)/venv $(STAMPS)/node ## Synthesize the stack into cdk.out (offline, no AWS credentials; cdk-nag runs)
	$(CDK) synth --quiet $(CDK_ARGS)

.PHONY: cfn-lint
cfn-lint: synth ## Lint the synthesized templates with cfn-lint
	$(VENV)/bin/cfn-lint cdk.out/*.template.json

.PHONY: diff
diff: $(STAMPS)/venv $(STAMPS)/node ## Compare the stack with the deployed one (needs AWS credentials)
	$(CDK) diff $(CDK_ARGS)

.PHONY: deploy
deploy: $(STAMPS)/venv $(STAMPS)/node ## Deploy (AWS credentials, cdk bootstrap, docker buildx for linux/arm64)
	$(CDK) deploy $(CDK_ARGS)

.PHONY: destroy
destroy: $(STAMPS)/venv $(STAMPS)/node ## Delete the stack (asks for confirmation)
	$(CDK) destroy $(CDK_ARGS)

WEB_BUILD := .make/web
$(WEB_BUILD)/app.js: local/web/app.js local/web/index.html local/web/level-meter.js $(STAMPS)/node
	node_modules/.bin/esbuild local/web/app.js --bundle --format=esm --minify --log-level=warning --outfile=$@
	cp local/web/index.html local/web/level-meter.js $(WEB_BUILD)/

.PHONY: web
web: $(WEB_BUILD)/app.js ## Bundle the offline call page (Pipecat JS client) into .make/web

.PHONY: local
local: $(STAMPS)/venv system-deps web ## Run the whole system on 127.0.0.1, no AWS account (PORT=7860; PIPELINE=nova-sonic for the default production pipeline)
	$(PY) -m local $(if $(PORT),--port $(PORT)) $(if $(PIPELINE),--pipeline $(PIPELINE))

.PHONY: bench
bench: $(STAMPS)/venv ## Run the benchmarks (JSON on stdout)
	$(PY) -m bench.broker --json
	$(PY) -m bench.api --json
	$(PY) -m bench.local_calls --json
	$(PY) -m bench.fleet --json
	$(PY) -m bench.discovery --json
	$(PY) -m bench.cold_start --json
	$(PY) -m bench.transports --json

.PHONY: clean
clean: ## Remove generated files (venv, node_modules, cdk.out, caches)
	rm -rf $(VENV) node_modules cdk.out $(STAMPS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
