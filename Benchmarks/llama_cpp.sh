# Sourced by the benchmark scripts: `llama_cpp_tool NAME` prints the path of llama.cpp's NAME (llama-server,
# llama-bench), building it first if needed from the llama-cpp-python sdist's vendored source into
# $LLAMA_DIR (~/.cache/kiln/llama-server), outside the repository; nothing of it is committed.
LLAMA_DIR=${LLAMA_DIR:-$HOME/.cache/kiln/llama-server}

llama_cpp_tool() {
  local tool=$1
  if [ ! -x "$LLAMA_DIR/build/bin/$tool" ]; then
    echo "building $tool from the llama-cpp-python sdist (several minutes, once)" >&2
    command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake; } >&2
    mkdir -p "$LLAMA_DIR"
    if ! ls -d "$LLAMA_DIR"/llama_cpp_python-*/vendor/llama.cpp >/dev/null 2>&1; then
      python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION:-0.3.36}" -d "$LLAMA_DIR/sdist" >&2
      tar -xzf "$LLAMA_DIR"/sdist/llama_cpp_python-*.tar.gz -C "$LLAMA_DIR"
    fi
    local src
    src=$(ls -d "$LLAMA_DIR"/llama_cpp_python-*/vendor/llama.cpp)
    cmake -S "$src" -B "$LLAMA_DIR/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DGGML_NATIVE=ON >/dev/null
    cmake --build "$LLAMA_DIR/build" --target "$tool" -j 2 >/dev/null
  fi
  echo "$LLAMA_DIR/build/bin/$tool"
}
