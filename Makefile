# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
#
# The build directory lives outside the clone so that only the first build on a
# machine pays for compiling RocksDB (about 22 minutes on 2 cores). Everything
# here uses one cargo profile (dev, tuned in Cargo.toml) for the same reason.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/segsync-target
CARGO ?= cargo
SEGSYNC := $(CARGO_TARGET_DIR)/debug/segsync

.PHONY: all deps build demo test fmt clippy bench bench-e2e fuzz

all: build

deps:
	@./scripts/ensure-deps.sh

build: deps
	$(CARGO) build --bins

demo: build
	$(SEGSYNC) demo

test: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test

# Benchmarks share the dev profile's build (see Cargo.toml for why).
bench: deps
	$(CARGO) bench --profile dev

bench-e2e: build
	$(SEGSYNC) bench

# Every fuzz target for FUZZ_SECONDS (default 600) each; needs nightly and
# cargo-fuzz (installed by the script). `make test` replays the corpora.
fuzz: deps
	./scripts/fuzz.sh
