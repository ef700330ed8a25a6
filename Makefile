# dlc: the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SPECS  := $(wildcard specs/*.dln)
BUILD  := build

.PHONY: demo test test-fast setup graphviz gallery clean

# Python environment with dlc (editable) and its test dependencies; re-run when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Graphviz's `dot` from Debian's packages when it is missing (needs root or sudo).
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  echo "installing graphviz (dot)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq graphviz >/dev/null; }

setup: $(VENV)/.installed graphviz

# Compile (plain and --fuse), summarise and draw every bundled spec into build/.
demo: setup
	@mkdir -p $(BUILD)
	@for spec in $(SPECS); do \
	  name=$$(basename $$spec .dln); \
	  $(PY) -m dlc compile $$spec -o $(BUILD)/$$name.py || exit 1; \
	  $(PY) -m dlc compile $$spec --fuse -o $(BUILD)/$$name.fused.py || exit 1; \
	  $(PY) -m dlc summary $$spec > $(BUILD)/$$name.summary.txt || exit 1; \
	  $(PY) -m dlc render $$spec -o $(BUILD)/$$name.svg || exit 1; \
	  $(PY) -m dlc render $$spec -o $(BUILD)/$$name.png || exit 1; \
	  echo "  $$spec -> $(BUILD)/$$name.{py,fused.py,summary.txt,svg,png}"; \
	done
	@$(PY) -m dlc summary specs/resnet18.dln | tail -3

# docs/gallery.md and its diagrams, from specs/.
gallery: setup
	$(PY) scripts/gallery.py

# pytest-xdist workers: one per core (`make test JOBS=0` runs in one process). Idle workers steal queued tests, so
# the few long tests (whole networks under the Triton interpreter) do not leave a core waiting. The 25 slowest tests
# are listed at the end, to keep an eye on the suite's time.
JOBS ?= auto
PYTEST := $(PY) -m pytest -q -n $(JOBS) --dist worksteal --durations=25

# The whole suite (what CI runs).
test: setup
	$(PYTEST)

# Everything but the tests marked slow.
test-fast: setup
	$(PYTEST) -m "not slow"

clean:
	rm -rf $(BUILD) .pytest_cache
