# The front door. The build itself is meson's; this file only sequences it.
BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_FUZZ ?= build-fuzz
FUZZ_TIME  ?= 60

.PHONY: all deps test demo fuzz bench clean format

all: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

deps:
	@scripts/install-deps

$(BUILD)/build.ninja:
	meson setup $(BUILD) --werror

# Unit (TAP), golden and integration tests on a -Werror build, then the whole
# suite again under AddressSanitizer + UndefinedBehaviorSanitizer.
test: deps
	scripts/run-tests

# The documented registry-mirror build, exported with --load (or to an OCI
# archive without a Docker engine), on this tree's binaries.
demo: all
	KILN_BUILD_DIR=$(abspath $(BUILD)) scripts/demo

fuzz: deps
	scripts/run-fuzz $(FUZZ_TIME)

bench: all
	scripts/bench

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)
