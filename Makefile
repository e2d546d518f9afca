# Thin wrapper over CMake: every real rule lives in CMakeLists.txt and tools/.
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz

.PHONY: all deps build asan test test-fast test-asan fuzz bench demo pki clean

all: build

deps:
	@tools/setup-deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMW_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

pki:
	@certs/mkpki

# The plain suite (with valgrind on the unit tests), then the same suite under ASan+UBSan,
# then a short run of every fuzz target.
test: build asan fuzz-build
	@tools/run-tests $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

test-fast: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

fuzz-build: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMW_FUZZ=ON -DMW_FUZZ_SECONDS=$${FUZZ_TEST_SECONDS:-10} >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)

fuzz: fuzz-build
	@tools/run-fuzz $(FUZZ_BUILD) $${FUZZ_SECONDS:-120}

bench: build
	@tests/bench/run $(BUILD)
	@tests/bench/outbox $(BUILD)
	@tests/bench/reload $(BUILD)
	@tests/bench/shadow $(BUILD)

demo: build
	@examples/car/demo

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
