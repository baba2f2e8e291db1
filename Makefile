# The two commands: `make demo` and `make test`. Both install what is missing first.
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 600
JOBS ?= $(shell nproc)
# Tests at twice as many at once as build jobs: a test mostly waits (for servers, mounts,
# timeouts), so at one per core the machine idled a third of the suite.
TEST_JOBS ?= $(shell echo $$(( $(JOBS) * 2 )))
# Compile results are shared by every clone of the tree, wherever it is checked out.
export CCACHE_BASEDIR := $(CURDIR)
CMAKE_FLAGS = -G Ninja -DCMAKE_BUILD_TYPE=Release

.PHONY: all deps build demo test test-release test-asan fuzz fuzz-build check-format format clean \
	bench bench-peers

all: build

deps:
	@scripts/setup.sh

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	@scripts/demo.sh

# Formatting, the suite, then the suite again under AddressSanitizer and UBSan. Both runs replay
# the fuzz targets over their committed corpus; the coverage-guided search is `make fuzz`.
test: check-format test-release test-asan

# A failed run ends with the failed assertions of each failed test (scripts/test-failures.sh).
test-release: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(TEST_JOBS) || \
	  { scripts/test-failures.sh $(BUILD); exit 1; }

test-asan: deps
	@cmake -S . -B $(ASAN_BUILD) $(CMAKE_FLAGS) -DSPLITFS_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(TEST_JOBS) || \
	  { scripts/test-failures.sh $(ASAN_BUILD); exit 1; }

# The libFuzzer targets of fuzz/ (clang, ASan + UBSan): `make fuzz` runs each for FUZZ_SECONDS.
fuzz-build: deps
	@CC=clang-14 CXX=clang++-14 cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DSPLITFS_SANITIZE=ON -DSPLITFS_FUZZ=ON -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link \
	  -DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link >/dev/null
	@cmake --build $(FUZZ_BUILD) --target fuzz_targets -j $(JOBS)

fuzz: fuzz-build
	fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# The benchmark of issue 8 (bench/run.sh): our mount against a TLS stream and a FUSE passthrough;
# `make bench ARGS=--peers` (or `make bench-peers`) adds rclone crypt mount and sshfs. Needs FUSE.
BENCH_TARGETS = splitfs splitfs-https-server splitfs-tcp-server bench_tls_stream bench_passthrough
bench: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target $(BENCH_TARGETS)
	SPLITFS_BIN_DIR=$(BUILD)/bin bench/run.sh $(ARGS)

bench-peers:
	@$(MAKE) --no-print-directory bench ARGS="--peers $(ARGS)"

check-format: deps
	@scripts/check-format.sh

format:
	@scripts/check-format.sh --fix

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) .demo
