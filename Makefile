# EC2 Creator Local: `make run` (API on 127.0.0.1:8000 against the local EC2 sandbox), `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
# Two levels of one venv: make run's (requirements.txt: the server, the sandbox emulator, the AWS CLI) and, on
# top, the test and lint tools (requirements-dev.txt) that make test and make lint add. STAMP is the full one
# (scripts/ensure_venv.sh, the Jenkins build's, writes it too); RUN_STAMP the runtime one.
STAMP       := $(VENV)/.installed
RUN_STAMP   := $(VENV)/.installed-runtime
HOST        ?= 127.0.0.1
PORT        ?= 8000
EC2_TARGET  ?= sandbox
SANDBOX_PORT ?= 5055
SANDBOX_URL := http://127.0.0.1:$(SANDBOX_PORT)
# Each emulator port has its own state (PID file, log, key, database), as scripts/sandbox.sh keys it:
# ./data/sandbox for 5055 (the default), ./data/sandbox/<port> for any other (`scripts/sandbox.sh dir`).
SANDBOX_STATE = ./data/sandbox$(if $(filter-out 5055,$(SANDBOX_PORT)),/$(SANDBOX_PORT))
# What `make run` and `make doctor` hand the server against the sandbox: fake credentials, the emulator,
# that port's database and key.
SANDBOX_ENV  = env -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_SESSION_TOKEN AWS_ACCESS_KEY_ID=testing \
	AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} AWS_EC2_METADATA_DISABLED=true \
	EC2_TARGET=sandbox EC2_ENDPOINT_URL=$(SANDBOX_URL) DATABASE_URL=$${SANDBOX_DATABASE_URL:-$(SANDBOX_STATE)/instances.db} \
	SSH_KEY_PATH=$${SSH_KEY_PATH:-$(SANDBOX_STATE)/my_ec2_keypair.pem}
# `make run`'s banner, printed once the server listens (after uvicorn's "Uvicorn running on"), never before:
# with the port taken, uvicorn's "address already in use" is the last word. It passes every line through
# and ignores Ctrl-C, so uvicorn's graceful shutdown is still shown (and never meets a closed pipe). The
# budget in force (BUDGET_USD, or SANDBOX_BUDGET_USD in the sandbox) is the server's own, taken from its
# start-up line ("EC2 Creator Local targets ...; budget 100.00 USD a month (...); ..."): $$1 target, $$2 URL.
AFTER_BIND  = bash -c 'trap "" INT; budget=; while IFS= read -r line; do printf "%s\n" "$$line"; \
	  case $$line in *"EC2 Creator Local targets "*"; budget "*) budget=$${line\#*; budget }; \
	    budget=$${budget%%;*}; budget=$${budget%%\"*};; esac; \
	  case $$line in *"Uvicorn running on"*) printf "%s%s: API docs at %s\n" "$$1" "$${budget:+, budget $$budget}" "$$2";; \
	  esac; done' banner
# The AWS CLI v2 the tests run next to the venv's v1 (Debian's awscli package; `make system-deps`).
AWS_CLI_V2  ?= /usr/bin/aws
export AWS_CLI_V2
# Integration tests mostly wait (on EC2 calls, grace periods, auto-stop and retry timers, a mail server that is
# down for a minute): four workers on two cores overlap the waits. Five were no faster (issue 26: the run is
# CPU-bound, wall/CPU 0.57 with either) and squeeze each worker's timing margins more.
PYTEST_WORKERS ?= 4
# `make test JUNIT_DIR=reports`: pytest and bats also write JUnit XML there (the Jenkins build job).
JUNIT_DIR   ?=
NPM_STAMP   := node_modules/.installed
# Test tools come pinned with the project: shellcheck from PyPI (requirements-dev.txt), bats from npm.
SHELLCHECK  := $(VENV)/bin/shellcheck
BATS        := node_modules/bats/bin/bats
JENKINSFILES := jenkins/deployment/Jenkinsfile jenkins/deployment/Jenkinsfile.manage jenkins/deployment/Jenkinsfile.offhours

.PHONY: help venv venv-dev tools system-deps run doctor sandbox sandbox-stop sandbox-status serve-sandbox db-upgrade db-copy test test-fast test-python test-bash test-bash-aws test-bash-scripts test-bash-cli-v2 test-jenkins lint clean bench bench-smoke

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}' \
	  | sed -e 's/$$(HOST)/$(HOST)/g' -e 's/$$(PORT)/$(PORT)/g' -e 's/$$(SANDBOX_PORT)/$(SANDBOX_PORT)/g'  # the values in force

# Packages go in through uv (pinned here; pip puts it in the venv): it downloads and byte-compiles side by side,
# ~20 s where pip took ~30 s, make test's first step before anything runs. Compiled at install, as pip does: where
# PYTHONDONTWRITEBYTECODE is set (CI here), nothing is compiled later, and each `aws` process would compile botocore.
# VENV_INSTALLER=pip installs with pip alone (a machine whose only index is pip's own configuration).
VENV_INSTALLER ?= uv
UV_VERSION  := 0.13.10
ifeq ($(VENV_INSTALLER),pip)
INSTALL_REQUIREMENTS = $(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -r
else
INSTALL_REQUIREMENTS = $(PY) -m pip install --quiet uv==$(UV_VERSION) && $(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -r
endif

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON_BOOT) -m venv $(VENV)
	$(INSTALL_REQUIREMENTS) requirements-dev.txt
	touch $(STAMP)

# Up to date when the full venv is (it holds requirements.txt too), else installs requirements.txt alone.
venv: ## Create/refresh the virtualenv make run needs (requirements.txt: no test or lint tools)
	@if { [ $(STAMP) -nt requirements.txt ] && [ $(STAMP) -nt requirements-dev.txt ]; } \
	    || [ $(RUN_STAMP) -nt requirements.txt ]; then :; else \
	  set -e; echo "installing requirements.txt into $(VENV)"; $(PYTHON_BOOT) -m venv $(VENV); \
	  $(INSTALL_REQUIREMENTS) requirements.txt && touch $(RUN_STAMP); fi

venv-dev: $(STAMP) ## The virtualenv with the test and lint tools too (requirements-dev.txt; make test does it)

sandbox: venv ## Start the local EC2 emulator (moto server) on SANDBOX_PORT with key pair my_ec2_keypair
	@SANDBOX_PORT=$(SANDBOX_PORT) scripts/sandbox.sh start

sandbox-stop: ## Stop the local EC2 emulator on SANDBOX_PORT (only that one)
	@SANDBOX_PORT=$(SANDBOX_PORT) scripts/sandbox.sh stop

sandbox-status: ## Does the emulator on SANDBOX_PORT answer? Also names the other ones running
	@SANDBOX_PORT=$(SANDBOX_PORT) scripts/sandbox.sh status

run: venv ## Start the API on $(HOST):$(PORT); EC2_TARGET=sandbox (default) or aws
ifeq ($(EC2_TARGET),aws)
	@set -o pipefail; EC2_TARGET=aws $(PY) -m uvicorn app.main:app --host $(HOST) --port $(PORT) 2>&1 \
	  | $(AFTER_BIND) "ec2-creator-local: target AWS (real account, region $${AWS_REGION:-$${AWS_DEFAULT_REGION:-us-east-1}})" http://$(HOST):$(PORT)/docs
else ifeq ($(EC2_TARGET),sandbox)
	@SANDBOX_PORT=$(SANDBOX_PORT) scripts/sandbox.sh start
	@set -o pipefail; $(SANDBOX_ENV) $(PY) -m uvicorn app.main:app --host $(HOST) --port $(PORT) 2>&1 \
	  | $(AFTER_BIND) "ec2-creator-local: target SANDBOX (local EC2 emulator at $(SANDBOX_URL), no AWS account used)" http://$(HOST):$(PORT)/docs
else
	@echo "EC2_TARGET must be 'sandbox' or 'aws', not '$(EC2_TARGET)'" >&2; exit 2
endif

# The API in the background (scripts/manage_server.sh: PID file, survives the shell) against the sandbox, with
# exactly make run's settings: the emulator on SANDBOX_PORT, fake credentials, that port's database and key.
serve-sandbox: venv ## Like run, but the API in the background (manage_server.sh); stop: scripts/manage_server.sh stop
	@SANDBOX_PORT=$(SANDBOX_PORT) scripts/sandbox.sh start
	@$(SANDBOX_ENV) scripts/manage_server.sh start "" $(HOST) $(PORT)

doctor: venv ## Would a create work? Checks CLI, credentials, key pair, VPC, types, AMIs, API (EC2_TARGET=aws for AWS)
ifeq ($(EC2_TARGET),aws)
	@EC2_TARGET=aws HOST=$(HOST) PORT=$(PORT) scripts/doctor.sh
else ifeq ($(EC2_TARGET),sandbox)
	@$(SANDBOX_ENV) HOST=$(HOST) PORT=$(PORT) scripts/doctor.sh
else
	@echo "EC2_TARGET must be 'sandbox' or 'aws', not '$(EC2_TARGET)'" >&2; exit 2
endif

db-upgrade: venv ## Bring DATABASE_URL's database to the newest schema (what a start does), then exit
	.venv/bin/python -m app.store upgrade

# FROM and TO reach the copy through the environment, not a command line (ps shows those): a URL may carry a
# password. The copy prints them with the password as ***.
db-copy: export DB_COPY_FROM := $(FROM)
db-copy: export DB_COPY_TO := $(TO)
db-copy: venv ## Copy the whole store FROM=<database> TO=<empty database> (SQLite -> PostgreSQL: docs/TEAM_SETUP.md)
	@if [ -z "$$DB_COPY_FROM" ] || [ -z "$$DB_COPY_TO" ]; then \
	  echo "usage: make db-copy FROM=<database> TO=<database>: each a SQLite file path, sqlite:///path or" >&2; \
	  echo "       postgresql://user:password@host:port/database; TO must be empty; stop the servers first" >&2; \
	  exit 2; fi
	@$(PY) -m app.store.copy

system-deps: ## Chromium, Java, Node.js/npm, curl, AWS CLI v2: installed from Debian as root, else the command to run
	@scripts/system_deps.sh

tools: system-deps venv-dev $(NPM_STAMP) ## Everything make test needs (system packages, .venv, node_modules)

lint: venv-dev ## shellcheck the bash scripts; ruff on all Python, mypy on app/, the import layering (pyproject.toml)
	$(SHELLCHECK) -S style aws_cli_bash_scripts/*.sh scripts/*.sh tests/support/*.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

# Three bats runs that share nothing (each emulator on a free port, each run its own temporary directory), so
# `make -j` runs them side by side: they mostly wait on processes (moto, uvicorn, aws), and one after the other
# they were the longest job of make test.
test-bash: test-bash-aws test-bash-scripts test-bash-cli-v2 ## bats suites for the bash scripts (the emulator one with the CLI v2)

# Each script's contract with a fake `aws` (argv, JSON out, errors). Its run against the emulator (integration.bats)
# is test-bash-cli-v2's, with the CLI v2 users have; the venv's v1 runs every script against the emulator in the
# pytest suites (every API server's `aws`), so a second bats run with v1 (~20 CPU-s) checked nothing new.
BATS_UNIT   := $(filter-out %/integration.bats,$(wildcard tests/aws_cli_bash_scripts/*.bats))
test-bash-aws: venv-dev $(NPM_STAMP)
	$(if $(JUNIT_DIR),mkdir -p $(JUNIT_DIR)/bats)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(BATS) $(if $(JUNIT_DIR),--report-formatter junit --output $(JUNIT_DIR)/bats) \
	    $(BATS_UNIT)

test-bash-scripts: venv-dev $(NPM_STAMP)
	$(if $(JUNIT_DIR),mkdir -p $(JUNIT_DIR)/bats-scripts)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(BATS) \
	    $(if $(JUNIT_DIR),--report-formatter junit --output $(JUNIT_DIR)/bats-scripts) tests/scripts

# The scripts against the emulator (a real moto server), with the AWS CLI v2.
test-bash-cli-v2: venv-dev $(NPM_STAMP)
	$(if $(JUNIT_DIR),mkdir -p $(JUNIT_DIR)/bats-cli-v2)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" AWS_CLI=$(AWS_CLI_V2) EXPECT_AWS_CLI_MAJOR=2 $(BATS) \
	    $(if $(JUNIT_DIR),--report-formatter junit --output $(JUNIT_DIR)/bats-cli-v2) tests/aws_cli_bash_scripts/integration.bats

# npm itself comes from system-deps (order-only: checked first, never a reason to reinstall).
$(NPM_STAMP): package.json package-lock.json | system-deps
	npm ci --no-audit --no-fund
	touch $(NPM_STAMP)

test-jenkins: venv-dev $(NPM_STAMP) ## Render jenkins/jobs.yaml (Jenkins Job Builder), lint the Jenkinsfiles, check the jobs
	$(VENV)/bin/jenkins-jobs -l error test jenkins/jobs.yaml >/dev/null
	npx --no-install npm-groovy-lint --noserver --failon error $(JENKINSFILES)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(BATS) tests/jenkins

test-fast: venv-dev ## Unit and in-process tests only (seconds): the edit-run loop
	$(PY) -m pytest -q -m "not integration" test_api.py tests

# Workers take whole modules in the order given: the longest first (by `pytest --durations`), so none is left
# alone at the end (pytest collects a module named twice once). --no-loadscope-reorder keeps that order:
# pytest-xdist's default hands out the modules with the MOST TESTS first, which left the one-test modules that
# take one or two minutes (schemathesis, the bench smoke) to start last.
SLOW_FIRST := tests/test_notifications.py tests/test_consistency.py tests/test_schemathesis.py tests/test_auto_stop.py \
	tests/bench tests/test_crash_recovery.py tests/test_batching.py tests/test_schedules.py tests/test_cloudwatch.py \
	tests/test_doctor.py tests/ui/test_dashboard.py tests/test_ec2cl.py \
	test_api.py tests/test_emulator_restart.py tests/test_replicas.py tests/test_lifecycle.py \
	tests/postgres/test_contract_on_postgres.py tests/test_budget_guard.py tests/test_iam_policy.py \
	tests/postgres/test_lifecycle_on_postgres.py tests/test_hostile_input.py tests/test_security.py

test-python: venv-dev ## pytest: REST contract suite (test_api.py) and tests/, on PYTEST_WORKERS workers
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder $(SLOW_FIRST) test_api.py tests \
	    $(if $(JUNIT_DIR),--junitxml=$(JUNIT_DIR)/pytest.xml)

test: ## Everything CI runs; installs what it needs first
	@# The system check (then node_modules) and the venv side by side: the venv's install is the long one.
	@$(MAKE) --no-print-directory -j3 tools
	@# The project's own modules byte-compiled once: where PYTHONDONTWRITEBYTECODE is set (CI here), every server
	@# start (~150 in a run) compiled app/ again otherwise (the venv's packages are compiled at install).
	@$(PY) -m compileall -q -j0 app tests/support bench >/dev/null
	@# The lint gate and the suites run side by side (the suites mostly wait on processes: servers,
	@# emulators, aws), each one's output printed whole when it ends; one that fails fails the run.
	@$(MAKE) --no-print-directory -j6 --output-sync=target lint test-bash test-jenkins test-python

bench: venv-dev ## Full benchmark (several minutes): data/bench/results.json and docs/PERFORMANCE.md
	$(PY) bench/run_bench.py

bench-smoke: venv-dev ## Benchmark at small sizes (< 60 s); fails if a process-count budget line misses
	$(PY) bench/run_bench.py --smoke

clean: ## Remove the venv and local data
	rm -rf $(VENV) data/sandbox
