# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv themselves; the torch pins are the builds available on this machine's disk.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test system-packages test-slow test-corpus fd-rule readiness-corpus bench bench-explain bench-gpu bench-blackbox bench-tf bench-metrics bench-run calibrate-health onnx-corpus report-screenshot serve-screenshots test-services lint clean

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
	@echo "the platform, with these models registered: $(BIN)/xaiready serve --demo   (http://127.0.0.1:8000)"

# Debian packages of the services tests drive themselves: the browser (report and platform pages) and the
# database (make test-services). Installed when missing; needs root, as CI has.
BROWSER := chromium chromium-driver
system-packages:
	@missing=""; for p in $(BROWSER) $(EXTRA_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } || \
		echo "warning: could not install$$missing; the tests that need them say so and are skipped"; fi

test: $(STAMP) system-packages
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Tests that start a real service themselves: the platform's suite against a throwaway PostgreSQL cluster.
test-services: $(STAMP)
	$(MAKE) --no-print-directory system-packages EXTRA_PACKAGES=postgresql
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m services

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

# `xaiready run` against the method called directly, and Ray with 2 actors against 1 (~6 min, 2 cores).
bench-run: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python bench/bench_run.py

# Trains 9 small real models (torchvision, timm) and measures the health-check thresholds (~12 min, 1 core).
calibrate-health: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python bench/calibrate_health.py

# torchvision exports, then every exporter family (paddle2onnx, tf2onnx, torch LSTM/GRU heads, timm, HF,
# onnxruntime-quantized); needs the corpus extra, and paddle2onnx without its onnx pin (~30 min, 1 core).
onnx-corpus: $(STAMP)
	$(BIN)/pip install -q -e '.[corpus]' && $(BIN)/pip install -q --no-deps 'paddle2onnx>=2.0'
	OMP_NUM_THREADS=1 $(BIN)/python bench/onnx_corpus.py
	OMP_NUM_THREADS=1 $(BIN)/python bench/onnx_corpus_exporters.py

# The run report's Chromium test, and its screenshot copied to docs/images/run_report.png (256 colours).
report-screenshot: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -s tests/runs/test_report_browser.py | tee .report-screenshot.log
	$(BIN)/python -c "import sys; from PIL import Image; Image.open(sys.argv[1]).convert('RGB').quantize(256).save(sys.argv[2], optimize=True)" \
		"$$(sed -n 's/^report screenshot: //p' .report-screenshot.log | tail -n 1)" docs/images/run_report.png
	rm -f .report-screenshot.log
	@echo "docs/images/run_report.png"

# The platform's pages in headless Chromium: the model list, a model page and an explain result.
serve-screenshots: $(STAMP)
	rm -rf build/serve-screenshots
	XAIREADY_SCREENSHOTS=build/serve-screenshots OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests/serve/test_web_browser.py
	for n in serve_models serve_model serve_explain; do \
		$(BIN)/python -c "import sys; from PIL import Image; Image.open(sys.argv[1]).convert('RGB').quantize(256).save(sys.argv[2], optimize=True)" \
			build/serve-screenshots/$$n.png docs/images/$$n.png || exit 1; done
	@echo "docs/images/serve_models.png docs/images/serve_model.png docs/images/serve_explain.png"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) demo-out build *.egg-info
