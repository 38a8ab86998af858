# The two commands a newcomer needs: `make run` and `make test`.
# Both install what they need (system libraries, virtualenv, package, bitcoind).
VENV := .venv
PY := $(VENV)/bin/python
# Two pytest workers (pytest-xdist), a test file each at a time; `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 2

.PHONY: run test setup bitcoind docs tables bench clean

setup:
	@scripts/setup.sh

bitcoind:
	@scripts/install-bitcoind.sh >/dev/null

run: setup bitcoind
	@BITCOIND=$$(scripts/install-bitcoind.sh) $(VENV)/bin/kaccy-bitcoin run

test: setup bitcoind
	@BITCOIND=$$(scripts/install-bitcoind.sh) $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

docs: setup
	@$(PY) scripts/render_state_machines.py > docs/state-machines.md

# The runtime's Core tables, generated from the SQLModel tables (adapters/sql/render_tables.py).
tables: setup
	@$(PY) scripts/render_core_tables.py > adapters/sql/core_tables.py

bench: setup bitcoind
	@BITCOIND=$$(scripts/install-bitcoind.sh) $(PY) bench/coin_selection.py --seed 1 --seed 2 --seed 3
	@BITCOIND=$$(scripts/install-bitcoind.sh) $(PY) bench/incoming.py
	@BITCOIND=$$(scripts/install-bitcoind.sh) $(PY) bench/startup.py
	@BITCOIND=$$(scripts/install-bitcoind.sh) $(PY) bench/zmq_wakeup.py
	@BITCOIND=$$(scripts/install-bitcoind.sh) $(PY) bench/api_load.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .hypothesis
