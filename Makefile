# linmix: `make demo` and `make test` work on a fresh clone with only python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := runs/demo

.PHONY: setup test test-all demo bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@# torch's CUDA build makes the venv ~6.4 GB: say so before pip fails half-way with ENOSPC
	@test -x $(BIN)/python || $(PYTHON) -c "import shutil, sys; free = shutil.disk_usage('.').free / 2**30; \
	sys.exit(0 if free >= 7 else f'make setup: {free:.1f} GiB free here; installing .venv needs about 7 GiB (torch is a CUDA build). Free some disk and re-run.')"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)  ## includes tests marked slow (and gpu, skipped without CUDA)
	$(BIN)/python -m pytest -q -m ''

demo: $(STAMP)
	mkdir -p $(DEMO)
	$(BIN)/python benchmarks/core/mixers.py --quick --out $(DEMO)/bench
	$(BIN)/linmix-lm demo --out $(DEMO)/lm
	$(BIN)/linmix-ehr demo --out $(DEMO)/ehr
	$(BIN)/linmix-ctr demo --out $(DEMO)/ctr
	$(BIN)/linmix-speech demo --out $(DEMO)/speech
	$(BIN)/linmix-physics demo --out $(DEMO)/physics
	$(BIN)/python -m linmix.shared.summary $(DEMO)

bench: $(STAMP)
	$(BIN)/python benchmarks/core/mixers.py --out runs/bench

lint: $(STAMP)
	$(BIN)/ruff check apps shared tests benchmarks recipes

clean:
	rm -rf runs lightning_logs
