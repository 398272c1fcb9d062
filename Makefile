# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv themselves; the torch pins are the builds available on this machine's disk.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-slow test-corpus fd-rule readiness-corpus bench bench-explain bench-gpu bench-blackbox bench-tf bench-metrics calibrate-health onnx-corpus lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(BIN)/xaiready demo --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# The whole readiness corpus: every architecture at three dtypes, every break cause in ten of them.
test-corpus: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow tests/corpus

# False-alarm and detection rates of the finite-difference rule on the corpus architectures.
fd-rule: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/fd_rule.py

# The readiness corpus as a table: architectures x dtypes, and architectures x injected break causes.
readiness-corpus: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/readiness_corpus.py

# Benchmarks print ratios (ours / anchor, ours / plain forward+backward); run them on a quiet machine.
bench: $(STAMP)
	$(BIN)/python bench/bench_check.py

bench-explain: $(STAMP)
	$(BIN)/python bench/bench_explain.py

bench-gpu: $(STAMP)
	$(BIN)/python bench/bench_explain.py --device cuda --batch 32 --repeats 10

bench-blackbox: $(STAMP)
	$(BIN)/python bench/bench_blackbox.py

bench-tf: $(STAMP)
	$(BIN)/python bench/bench_tf.py

bench-metrics: $(STAMP)
	$(BIN)/python bench/bench_metrics.py

# Trains 9 small real models (torchvision, timm) and measures the health-check thresholds (~12 min, 1 core).
calibrate-health: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python bench/calibrate_health.py

onnx-corpus: $(STAMP)
	$(BIN)/python bench/onnx_corpus.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) demo-out build *.egg-info
