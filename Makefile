# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EK     := $(BIN)/edgekit
DEMO   := runs/demo

.PHONY: install demo test test-arm lint bench bench-arm bench-int8 clean

install: $(STAMP)

# Reinstall only when the package's declared dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[train,pte,dev]'
	touch $(STAMP)

# The main job on the offline default: lenet5 on scikit-learn's digits.
demo: $(STAMP)
	rm -rf $(DEMO)
	$(EK) train lenet5 --out $(DEMO)
	$(EK) export $(DEMO) --onnx --torchscript --int8
	$(EK) predict $(DEMO)/export/model.int8.onnx $(DEMO)/sample.png
	$(EK) bench $(DEMO)
	$(EK) summary $(DEMO)

# The suite on TEST_WORKERS processes (pytest-xdist; a file's tests stay on one worker, so its
# fixtures are built once): most tests keep one core busy, so two workers halve CI's wait.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile
	$(BIN)/ruff check .

# edgekit on an emulated Pi 4 and Pi 5 (qemu-user, aarch64 python from Debian packages); the
# environment is cached in ~/.cache/edgekit/arm, keyed by what it contains.
test-arm: $(STAMP)
	PYTHON=$(BIN)/python bash tools/test-arm.sh

lint: $(STAMP)
	$(BIN)/ruff check .

# The latency suite (benchmarks/): models x paths x threads x batch, JSON with machine facts.
# make bench MODELS=lenet5,resnet18 BENCH_JSON=x86.json; compare machines with
# edgekit bench compare x86.json pi5.json (or pytest-benchmark compare).
BENCH_JSON ?= runs/bench/suite.json
MODELS     ?=
bench: $(STAMP)
	mkdir -p $(dir $(BENCH_JSON))
	EDGEKIT_BENCH_MODELS=$(MODELS) $(BIN)/python -m pytest benchmarks --benchmark-only \
		--benchmark-json=$(BENCH_JSON) --benchmark-min-rounds=10 --benchmark-max-time=1 \
		--benchmark-warmup=on --benchmark-warmup-iterations=5 --benchmark-sort=name \
		--benchmark-columns=min,median,mean,stddev,rounds

# x86 vs emulated Pi 4 / Pi 5 on the same ONNX artifacts: edgekit bench on each, then
# edgekit bench compare (build/arm-bench/compare.md, compare.png). Emulated != Pi timings.
# make bench-arm ARTIFACTS="runs/demo/export/model.onnx runs/demo/export/model.int8.onnx"
ARTIFACTS ?= $(DEMO)/export/model.onnx $(DEMO)/export/model.int8.onnx
bench-arm: $(STAMP)
	PYTHON=$(BIN)/python bash tools/bench-arm.sh $(ARTIFACTS)

# Issue 8's goal: the artifact edgekit picks against the best a user builds by hand
# (resnet18, mobilenet_v2 at 224x224, batch 1, 2 threads); writes runs/bench/int8_speed.json.
bench-int8: $(STAMP)
	$(BIN)/python benchmarks/int8_speed.py --out runs/bench/int8_speed.json

clean:
	rm -rf $(VENV) runs build .pytest_cache .benchmarks
