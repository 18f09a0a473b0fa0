# Two commands on a fresh Debian machine:  make test   /   make demo
# (make bench runs the benchmarks, make lint the linters, make clean the cleanup.)
# Every step is idempotent; stamp files inside .venv keep repeated runs quick.

PYTHON  ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMPS  := $(VENV)/.fastrpc
APT_PKGS_BASE := rabbitmq-server librabbitmq-dev openssl valgrind strace iptables postgresql

# What the compiled modules are built from (fastrpc/_impl.py lists the twins;
# the connection layer's pure modules are compiled unchanged).
EXT_SOURCES := $(wildcard ext/*.pyx ext/*.pxd ext/*.pxi ext/*.h fastrpc/_ext/*.pxd fastrpc/_ext/*.pxi fastrpc/amqp/*.pxd fastrpc/amqp/*_py.py \
                 fastrpc/drivers/amqp/*.pxd fastrpc/drivers/amqp/*_py.py fastrpc/*_py.py) \
               fastrpc/_impl.py
C_BENCH     := bench/c_client/amqp_bench

.PHONY: all setup system-deps test demo bench drills liveness-drill lint clean distclean

all: test

# --- system packages -------------------------------------------------------
# Checks are cheap, so they run every time instead of being stamped: a package
# removed later is noticed.
system-deps:
	@missing=""; \
	[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing="$$missing rabbitmq-server"; \
	[ -f /usr/include/amqp.h ] || missing="$$missing librabbitmq-dev"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v valgrind >/dev/null 2>&1 || missing="$$missing valgrind"; \
	command -v strace >/dev/null 2>&1 || missing="$$missing strace"; \
	command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing="$$missing iptables"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ ! -x $(VPY) ]; then \
	  $(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	fi; \
	command -v cc >/dev/null 2>&1 || missing="$$missing gcc"; \
	inc=$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null); \
	[ -n "$$inc" ] && [ -f "$$inc/Python.h" ] || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
	  pkgs="$(APT_PKGS_BASE)$$missing"; \
	  pkgs=$$(echo $$pkgs | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	  cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$pkgs"; \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing system packages:$$missing"; \
	    sh -c "$$cmd" || exit 1; \
	  else \
	    echo "Missing system packages:$$missing"; \
	    echo "Run as root:  $$cmd"; \
	    exit 1; \
	  fi; \
	fi
	@# The packaged broker service may be running; ours uses its own ports and
	@# its own epmd, so it does not get in the way and is left alone. The same
	@# goes for the packaged PostgreSQL cluster: the tests start their own.

# --- virtualenv and package --------------------------------------------------
$(VPY):
	$(PYTHON) -m venv $(VENV)

# Build tools first, then the package with its test/dev extras. No build
# isolation: the venv's own Cython/setuptools build the extension, which also
# works offline from a local wheel cache.
$(STAMPS)/installed: pyproject.toml setup.py | $(VPY)
	@mkdir -p $(STAMPS)
	$(VPY) -m pip install -q --upgrade pip 'setuptools==84.2.1' 'wheel==0.48.0' 'Cython==3.2.9'
	$(VPY) -m pip install -q --no-build-isolation -e '.[test,dev]'
	@touch $@ $(STAMPS)/ext

# Rebuild the compiled modules in place when their sources change.
$(STAMPS)/ext: $(EXT_SOURCES) setup.py $(STAMPS)/installed
	$(VPY) setup.py -q build_ext --inplace
	@touch $@

setup: system-deps $(STAMPS)/installed $(STAMPS)/ext

# --- test --------------------------------------------------------------------
# Every step runs even if an earlier one failed, so one run shows all problems;
# the target fails if any did. pytest's exit status 5 (nothing collected) is a
# failure like any other non-zero status. The pure-Python pass runs the tests
# marked `twins` (those that exercise a compiled/pure twin; see tests/conftest.py).
# Each step's output is also kept, so the end of the run lists the tests that
# failed in every pytest pass (a long run's first lines scroll out of sight).
test: setup
	@failed=""; log=$(STAMPS)/test-step.log; : > $(STAMPS)/test-failures; \
	run() { name=$$1; shift; echo "==> $$name"; \
	  { "$$@"; echo $$? > $(STAMPS)/test-step.rc; } 2>&1 | tee $$log; \
	  [ "$$(cat $(STAMPS)/test-step.rc)" = 0 ] || failed="$$failed $$name"; \
	  grep -E '^(FAILED|ERROR) ' $$log | sed "s|^|[$$name] |" >> $(STAMPS)/test-failures || true; }; \
	run "pytest (compiled)" $(VPY) -m pytest tests -q; \
	run "pytest (pure Python)" env FASTRPC_NO_EXTENSIONS=1 $(VPY) -m pytest tests -q -m twins; \
	run "ruff" $(VENV)/bin/ruff check fastrpc; \
	run "mypy" $(VENV)/bin/mypy fastrpc; \
	if [ -n "$$failed" ]; then \
	  echo "FAILED:$$failed"; cat $(STAMPS)/test-failures; exit 1; fi; \
	echo "All checks passed."

# --- demo --------------------------------------------------------------------
demo: setup
	$(VPY) -m fastrpc.demo

# --- benchmarks ----------------------------------------------------------------
$(C_BENCH): $(C_BENCH).c
	cc -O2 -Wall -pthread -o $@ $< -lrabbitmq

# Build the C reference client only when its source exists (it may not yet).
bench: setup $(if $(wildcard $(C_BENCH).c),$(C_BENCH))
	@set -e; \
	if [ -f bench/bench_codec.py ]; then $(VPY) -m pytest bench/bench_codec.py --benchmark-only -q; fi; \
	if [ -f bench/bench_envelope.py ]; then $(VPY) -m pytest bench/bench_envelope.py --benchmark-only -q; fi; \
	if [ -f bench/raw_throughput.py ]; then $(VPY) bench/raw_throughput.py; fi; \
	if [ -f bench/rpc_scenarios.py ]; then $(VPY) bench/rpc_scenarios.py; fi; \
	if [ -f bench/call_cost.py ]; then $(VPY) bench/call_cost.py; fi

# --- failure drills ------------------------------------------------------------
# Kill, freeze and cut off node 1 of a throwaway 3-node cluster under each
# contender (oslo.messaging's rabbit driver, oslo's API on fastrpc://, fastrpc
# with classic and with quorum queues) and print what it cost the callers
# (docs/RELIABILITY.md). Needs root for iptables. Takes about 20-25 minutes on
# two cores (freezes last up to 90 s, each drill ends with a cluster restore);
# bench/drills.py --help for shorter runs.
drills: setup
	$(VPY) bench/drills.py --markdown --json drills.json

# Ten services reporting through a conductor while node 1 is killed, frozen
# and cut off, under fastrpc and under oslo.messaging's rabbit driver: were
# any shown down (docs/RELIABILITY.md, "Service liveness")? About 20 minutes.
liveness-drill: setup
	$(VPY) bench/liveness_drill.py --markdown --json liveness-drill.json

# --- lint ----------------------------------------------------------------------
lint: setup
	@failed=""; \
	$(VENV)/bin/ruff check fastrpc tests $(wildcard bench) || failed="$$failed ruff"; \
	$(VENV)/bin/mypy fastrpc || failed="$$failed mypy"; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed"; exit 1; fi

# --- clean ---------------------------------------------------------------------
clean:
	rm -rf build drills.json liveness-drill.json *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
	rm -f fastrpc/_ext/*.so $(patsubst %.pyx,%.c,$(wildcard ext/*.pyx)) $(C_BENCH)
	rm -f fastrpc/amqp/*_py.c
	rm -rf $(STAMPS)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
