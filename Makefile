# rakv — the two commands of the README, and helpers.
#   make run    install what is missing, build, train the default model and sample from it
#   make test   install what is missing, build, run every test
#   make test-sanitize   the whole suite under AddressSanitizer + UBSan (build-sanitize/)
#   make fuzz [FUZZ_SECONDS=60]   each libFuzzer target for that long (clang, build-fuzz/)
BUILD ?= build
SANITIZE_BUILD ?= build-sanitize
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
JOBS ?= $(shell nproc)
# Where nvcc is installed, the build also compiles the CUDA kernels (no GPU needed, nothing linked),
# so a kernel that stops compiling fails `make test` (and CI) here, not on the device.
CMAKE_FLAGS ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),-DRAKV_CUDA_COMPILE_ONLY=ON)
CONFIG_FILE := $(wildcard .config)

.PHONY: setup configure build run test test-sanitize fuzz bench menuconfig olddefconfig defconfigs format clean

setup:
	@scripts/setup.sh

configure: setup
	@test -f $(BUILD)/build.ninja || cmake -S . -B $(BUILD) -G Ninja \
	  -DCMAKE_BUILD_TYPE=Release -DRAKV_WERROR=ON $(CMAKE_FLAGS)

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/rakv run $(if $(CONFIG_FILE),--config .config)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 1800

# GCC's ASan + UBSan at -O1 with line tables, every test and the CLI processes they start
# instrumented (LibTorch itself is not). Stricter than the sanitizers' defaults; no suppressions.
SANITIZER_ENV := ASAN_OPTIONS=detect_stack_use_after_return=1:check_initialization_order=1:strict_string_checks=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
test-sanitize: setup
	@test -f $(SANITIZE_BUILD)/build.ninja || cmake -S . -B $(SANITIZE_BUILD) -G Ninja \
	  -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" -DRAKV_SANITIZE=ON \
	  -DRAKV_WERROR=ON -DRAKV_BUILD_BENCH=OFF
	@cmake --build $(SANITIZE_BUILD) -j $(JOBS)
	cd $(SANITIZE_BUILD) && $(SANITIZER_ENV) ctest --output-on-failure -j $(JOBS) --timeout 1800

# The parsers' fuzz targets need no LibTorch: a separate clang project (fuzz/CMakeLists.txt).
fuzz:
	@RAKV_SETUP_SANITIZE=1 scripts/setup.sh
	@test -f $(FUZZ_BUILD)/build.ninja || CXX=clang++ cmake -S fuzz -B $(FUZZ_BUILD) -G Ninja \
	  -DRAKV_WERROR=ON
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)
	@fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

bench: build
	$(BUILD)/bench/bench_gate_scaling

# Kconfig front-ends (Debian's kconfig-frontends-nox) on the repository's Kconfig.
menuconfig: setup
	KCONFIG_CONFIG=.config kconfig-mconf Kconfig

olddefconfig: setup
	KCONFIG_CONFIG=.config kconfig-conf --olddefconfig Kconfig

defconfigs:
	@ls configs/defconfigs

defconfig-%:
	@test -f configs/defconfigs/$* || { echo "no defconfig '$*'; available: $$(ls configs/defconfigs | tr '\n' ' ')" >&2; exit 1; }
	cp configs/defconfigs/$* .config
	@echo "wrote .config from configs/defconfigs/$*"

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h' '*.cu' '*.cuh')

clean:
	rm -rf $(BUILD)
