# rakv — the two commands of the README, and helpers.
#   make run    install what is missing, build, train the default model and sample from it
#   make test   install what is missing, build, run every test
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
CONFIG_FILE := $(wildcard .config)

.PHONY: setup configure build run test bench menuconfig olddefconfig defconfigs format clean

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
