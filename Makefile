# The README's commands. Each target sets up what it needs on a fresh machine.
#   make serve   run the service (Gunicorn) on the committed models at http://127.0.0.1:8000
#                (this machine only; SCRATCHNET_BIND=0.0.0.0:8000 listens on every interface)
#   make test    run the test suite
#   make bench   run the benchmarks in bench/ (results in bench/results/ and docs/benchmarks.md)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Genuine copies of the datasets, when a checkout has them beside it; tests that need them
# skip with a reason otherwise.
SCRATCHNET_DATASETS ?= $(abspath $(wildcard ../shared/datasets))
export SCRATCHNET_DATASETS
# KServe's Python client is too heavy for the test extra (kubernetes, grpcio, fastapi: ~450 MB): it
# gets a virtual environment of its own, which tests/test_kserve_client.py runs it from.
KSERVE_VENV ?= $(VENV)-kserve
KSERVE_PINS = kserve==0.21.0 numpy==2.4.6

.PHONY: serve test train bench venv system-deps kserve-client clean

# Python 3.11 or newer: an older one makes no virtual environment, and one an older Python made
# is named (pip's refusal did not say that the environment, reused every time, was the cause).
$(BIN)/.installed-%: pyproject.toml
	@if test -x $(BIN)/python; then python=$(BIN)/python; fix="remove $(VENV) (make clean) and run make again"; \
	else python=$(PYTHON); fix="name a newer one: make $(or $(MAKECMDGOALS),venv) PYTHON=python3.12, say"; fi; \
	$$python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { version=$$($$python -V 2>/dev/null); \
	  echo "error: $$python is $${version:-not found}; scratchnet needs Python 3.11 or newer: $$fix" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[$*]'
	touch $@

venv: $(BIN)/.installed-service,trainer,test

# exec: Gunicorn takes the shell's place, so the SIGTERM make passes to its recipe (kill, timeout)
# stops it rather than the shell, which would leave it serving with no parent.
serve: $(BIN)/.installed-service
	SCRATCHNET_REGISTRY=$${SCRATCHNET_REGISTRY:-models} SCRATCHNET_BIND=$${SCRATCHNET_BIND:-127.0.0.1:8000} \
	  exec $(BIN)/gunicorn -c service/gunicorn_conf.py 'service.app:create_app()'

# Debian packages the browser and load tests use (skipped when not root or apt is absent).
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in chromium wrk nginx-light; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi; \
	else echo "system-deps: not root or no apt-get; browser and load-balancer tests will skip if chromium or nginx is missing (fail under CI)"; fi

# Without a package index the install fails and says so, once: the KServe client's test then
# skips with its reason (and fails under CI). Remove $(KSERVE_VENV) to try again. Not built when
# SCRATCHNET_KSERVE_PYTHON names a Python that has it.
$(KSERVE_VENV)/.installed:
	@if [ -n "$$SCRATCHNET_KSERVE_PYTHON" ]; then exit 0; fi; \
	if [ -f $(KSERVE_VENV)/.failed ]; then \
	  echo "kserve-client: its install failed before (remove $(KSERVE_VENV) to try again); its test will skip"; exit 0; fi; \
	rm -rf $(KSERVE_VENV); \
	$(PYTHON) -m venv $(KSERVE_VENV) && timeout 600 $(KSERVE_VENV)/bin/pip install --quiet $(KSERVE_PINS) && touch $@ \
	  || { mkdir -p $(KSERVE_VENV) && touch $(KSERVE_VENV)/.failed; \
	       echo "kserve-client: KServe's client could not be installed; its test will skip (and fail under CI)"; }

kserve-client: $(KSERVE_VENV)/.installed

test: $(BIN)/.installed-service,trainer,test system-deps kserve-client
	SCRATCHNET_KSERVE_PYTHON=$${SCRATCHNET_KSERVE_PYTHON:-$$(test -f $(KSERVE_VENV)/.installed && echo $(abspath $(KSERVE_VENV))/bin/python)} \
	  $(BIN)/python -m pytest $(PYTEST_ARGS)

train: $(BIN)/.installed-service,trainer,test
	$(BIN)/python -m trainer $(ARGS)

# The README's benchmark table, one script a row (about 30 minutes; the soak, bench/soak.py,
# runs on its own: 30 minutes).
bench: $(BIN)/.installed-service,trainer,test system-deps
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/train_memory.py
	$(BIN)/python bench/user_images.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/image_work.py

clean:
	rm -rf $(VENV) $(KSERVE_VENV) .pytest_cache build *.egg-info
