# Kiln: the two commands a newcomer needs are `make serve` and `make test`. Both install what they
# need on a fresh Debian 12 machine (as root), so nothing has to be set up by hand.

SWIFT      ?= swift
BUILD_DIR  ?= .build
# Debian packages the build, the tests and the server need.
APT_PACKAGES := pkg-config libnghttp2-dev libssl-dev zlib1g-dev libvulkan-dev mesa-vulkan-drivers glslc \
                nghttp2-client nghttp2-server curl openssl python3 python3-pip procps
PY_PACKAGES  := grpcio grpcio-health-checking grpcio-tools
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps pydeps generate build build-release test serve bench-transport bench-rpc fuzz clean certs

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
	@python3 -c 'import grpc, grpc_health, grpc_tools' 2>/dev/null || python3 -m pip install -q $(PY_PACKAGES) 2>/dev/null \
	  || python3 -m pip install -q --break-system-packages $(PY_PACKAGES)

build: deps
	$(SWIFT) build

build-release: deps
	$(SWIFT) build -c release

## Regenerates Sources/KilnAPI from Schemas/ with Kiln's own generator (a test fails when it is stale).
SCHEMAS := kiln/v1/inference.proto grpc/health/v1/health.proto
generate: deps
	$(SWIFT) build --product kiln-protoc
	$$($(SWIFT) build --show-bin-path)/kiln-protoc --proto_path Schemas --swift_out Sources/KilnAPI $(SCHEMAS)
	$$($(SWIFT) build --show-bin-path)/kiln-protoc --proto_path Tests/KilnProtocTests/Fixtures \
	  --swift_out Tests/KilnProtocTests/Generated kiln/test/v1/everything.proto

## Builds everything and runs every test.
test: deps pydeps
	$(SWIFT) build --build-tests
	KILN_BIN=$$($(SWIFT) build --show-bin-path)/kiln $(SWIFT) test --skip-build --disable-swift-testing

## Runs the server: TLS on 127.0.0.1:8443 (development certificates) and h2c on 127.0.0.1:8080.
serve: build-release
	$$($(SWIFT) build -c release --show-bin-path)/kiln serve $(SERVE_ARGS)

## Transport benchmark against nghttpd, interleaved in one run; figures go to BENCHMARKS.md.
bench-transport: build-release
	KILN_BIN=$$($(SWIFT) build -c release --show-bin-path)/kiln bash Benchmarks/transport.sh

## RPC benchmark against the bare-C nghttp2 echo and (when built) grpc-swift-2, interleaved.
bench-rpc: build-release
	KILN_BIN=$$($(SWIFT) build -c release --show-bin-path)/kiln bash Benchmarks/rpc.sh

## libFuzzer on the protobuf decoder and the gRPC message framer (FUZZ_SECONDS each, default 60).
fuzz: deps
	bash Fuzz/run.sh

## Makes new development certificates (Certs/ is committed; this is only for renewal).
certs:
	Certs/generate.sh

clean:
	rm -rf $(BUILD_DIR)
