# Two entry points: `make demo` (the whole pipeline on the bundled benchmark) and `make test`.
# Each creates .venv and installs what it needs on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-kernels bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rethink demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The learning tests again with the basic and the AVX2 kernels: a tiny run's trajectory depends on the CPU's kernels,
# and what they assert must hold on any CPU. Exit 5 (no test collected, e.g. `-k` in PYTEST_ARGS) is not a failure.
KERNELS := "ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41" "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2"
test-kernels: $(STAMP)
	@for k in $(KERNELS); do \
		echo "learning tests with $$k"; \
		env $$k $(BIN)/python -m pytest -q -m learning $(PYTEST_ARGS); rc=$$?; \
		if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then exit $$rc; fi; \
	done

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_eval.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_pretrain.py
	$(BIN)/python benchmarks/bench_study.py --quick  # full size runs the demo study twice (~25 min)

clean:
	rm -rf $(VENV) runs
