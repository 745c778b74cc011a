# Two entry points: `make demo` (the main job on bundled data, offline models) and `make test`.
# Both create .venv with pip when it is missing (scripts/install.sh: the steps the container images run too) and
# reinstall only when pyproject.toml, the Makefile or scripts/install.sh changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= text,vision,audio,handcrafted,open_clip,onnx,tensorflow,ray,dev
comma := ,
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile scripts/install.sh | sha1sum | cut -c1-12)-$(subst $(comma),_,$(EXTRAS))
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export TF_CPP_MIN_LOG_LEVEL ?= 2
export NO_MKDOCS_2_WARNING ?= 1

.PHONY: demo test lint bench install docs

install: $(STAMP)

$(STAMP):
	scripts/install.sh --venv $(VENV) --python $(PYTHON) --editable --no-compile --extras $(EXTRAS)
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(BIN)/ducho demo --output demo-output

# Fidelity and batch-size tests again under two forced CPU kernel levels (torch's ATen, oneDNN, MKL), so that a result
# depending on the kernels this machine picks fails here, not only on machines of another CPU.
KERNELS_AVX2 := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
KERNELS_BASE := ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q
	@# AVX2: on a machine whose CPU has AVX-512 only (elsewhere AVX2 is the native level the first run used)
	if grep -q avx512 /proc/cpuinfo; then $(KERNELS_AVX2) $(BIN)/python -m pytest -q -m kernels; \
	else echo "kernels: the native level is AVX2 here (no AVX-512): the main run covered it"; fi
	$(KERNELS_BASE) $(BIN)/python -m pytest -q -m kernels

# The documentation site (site/): hand-written pages in docs/, the configuration, backends and command-line references
# generated from the code by scripts/docgen (an MkDocs hook). `make test` builds it too (tests/test_docs.py).
docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python benchmarks/text_throughput.py
