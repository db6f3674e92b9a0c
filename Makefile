# LayerGate build glue. `make test` is what CI runs (.ci/run).
SWIFT ?= swift
BENCH_ARGS ?=
TORTURE_MINUTES ?= 1
# Tests use @testable imports; make test builds them in release with this.
TESTABLE = -Xswiftc -enable-testing
# Every build and test runs through scripts/swift.sh: a private TMPDIR, removed afterwards
# (the Swift driver leaves an empty directory in TMPDIR on every run).
SWIFTRUN = SWIFT=$(SWIFT) scripts/swift.sh

.PHONY: run test build deps promtool moto bench proto testdata c-client clean torture fuzz

# Runs layergated on its defaults (README, "layergated flags"): socket ./.layergate/layergate.sock,
# data in ./.layergate/data, and Prometheus metrics at http://127.0.0.1:9898/metrics (RUN_ARGS= turns them off).
# Stop it with Ctrl-C (graceful shutdown). Talk to it with: .build/release/layergate --help
RUN_ARGS ?= --metrics-listen 127.0.0.1:9898
run: deps
	@echo "make: building layergated and layergate (release)"
	$(SWIFTRUN) build -c release --product layergated
	$(SWIFTRUN) build -c release --product layergate
	@echo "make: starting layergated; try: .build/release/layergate create-tenant 0123456789abcdef0123456789abcdef"
	@echo "make: metrics (if RUN_ARGS keeps --metrics-listen): curl -s http://127.0.0.1:9898/metrics"
	.build/release/layergated $(RUN_ARGS)

# Everything needed to build: the Swift toolchain (preinstalled on our machines;
# clang ships with it for the C targets), the protobuf-c runtime library and
# libcurl (S3), installed from Debian's packages when missing.
deps:
	@command -v $(SWIFT) >/dev/null || { echo "make: the Swift toolchain (swift 6.2+) is required and not on PATH"; exit 1; }
	@echo "make: using $$($(SWIFTRUN) --version 2>&1 | head -1)"
	@if ! pkg-config --exists libprotobuf-c 2>/dev/null; then \
		echo "make: installing libprotobuf-c-dev and pkg-config (apt-get)"; \
		apt-get update -qq && apt-get install -y -qq libprotobuf-c-dev pkg-config >/dev/null; \
	fi
	@echo "make: protobuf-c $$(pkg-config --modversion libprotobuf-c)"
	@if ! pkg-config --exists libcurl 2>/dev/null; then \
		echo "make: installing libcurl4-openssl-dev (apt-get): the S3 client of --remote-storage"; \
		apt-get update -qq && apt-get install -y -qq libcurl4-openssl-dev >/dev/null; \
	fi
	@echo "make: libcurl $$(pkg-config --modversion libcurl)"
	@command -v cc >/dev/null || { echo "make: installing a C compiler for clients/c (apt-get install gcc)"; \
		apt-get update -qq && apt-get install -y -qq gcc >/dev/null; }

# promtool (Debian package prometheus) checks the server's /metrics output in
# MetricsTests; when it cannot be installed that check skips and says why.
promtool:
	@command -v promtool >/dev/null || { echo "make: installing promtool (apt-get install prometheus) for the metrics test"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; } \
		|| echo "make: could not install prometheus: MetricsTests will skip promtool"; }

# moto (PyPI moto[server]): the local S3 endpoint the remote-storage tests start
# and stop on loopback; when it cannot be installed those tests skip and say why.
moto:
	@command -v moto_server >/dev/null || [ -x "$$HOME/.pyenv/shims/moto_server" ] || { \
		echo "make: installing moto[server] (pip) for the S3 remote-storage tests"; \
		python3 -m pip install -q 'moto[server]' >/dev/null 2>&1 || pip install -q 'moto[server]' >/dev/null 2>&1 \
		|| echo "make: could not install moto: the S3 tests will skip"; }

# Regenerates Protocol/c (the protoc-c output) from Protocol/layergate.proto (installs protoc-c if missing).
proto:
	scripts/gen-proto.sh

# Re-encodes the wire test vectors (Protocol/testdata/*.txtpb -> .bin) with protoc's encoder.
testdata:
	scripts/gen-testdata.sh

# The C client library, its example and its bench (clients/c/build).
c-client: deps
	$(MAKE) -C clients/c

build: deps
	$(SWIFTRUN) build

# Builds every target in release (the crash tests need the layergate-testhelper binary), then
# runs every test: unit, model-based, the crash-point and fault sweeps on a
# simulated disk, the subprocess crash tests, the server integration tests
# (a real tmpfs that fills up when run as root; hostile peers against the
# release build), a minute of `layergate torture` while the fuzz targets build
# and run for 30 s each (the torture checks correctness, not speed, so it may share the cores),
# and the C client's tests (under valgrind) against the layergated just built.
test: deps promtool moto
	@echo "make: building all targets and tests (release, with testing enabled: one build serves the tests, the binaries they spawn and the measurements)"
	$(SWIFTRUN) build -c release --build-tests $(TESTABLE)
	@echo "make: running the Swift test suite (SWIFTNIO_STRICT: NIO API misuse, such as an EmbeddedChannel used off its thread, stops the run)"
	SWIFTNIO_STRICT=1 $(SWIFTRUN) test -c release --skip-build $(TESTABLE)
	@echo "make: hostile peers against layergated, alone (memory, descriptors, a reader's latency)"
	LAYERGATE_BOUNDS=1 $(SWIFTRUN) test -c release --skip-build $(TESTABLE) --filter ResourceBoundTests
	@if command -v protoc-c >/dev/null; then scripts/gen-testdata.sh --check; \
		else echo "make: protoc-c not installed: not re-checking Protocol/testdata/*.bin against the .txtpb (make testdata installs it)"; fi
	@echo "make: $(TORTURE_MINUTES) min of layergate torture (crashes, full disks, no descriptors; checked after every restart), meanwhile 30 s of fuzzing per target, all at once (make fuzz FUZZ_SECONDS=N for longer)"
	@.build/release/layergate torture --minutes $(TORTURE_MINUTES) & torture=$$!; \
		$(MAKE) fuzz FUZZ_SECONDS=30 && fuzz=0 || fuzz=$$?; \
		wait $$torture && tortured=0 || tortured=$$?; \
		[ $$fuzz = 0 ] || echo "make: fuzzing failed"; [ $$tortured = 0 ] || echo "make: torture failed"; \
		[ $$fuzz = 0 ] && [ $$tortured = 0 ]
	@echo "make: building and testing the C client (clients/c)"
	$(MAKE) -C clients/c test LAYERGATED=$(CURDIR)/.build/release/layergated

# libFuzzer over what LayerGate reads from peers and disks: the request and
# response decoders, layer files and WAL segments (Sources/LayerGateFuzz), and
# the C client's response handling, each for FUZZ_SECONDS (default 60), at once.
FUZZ_SECONDS ?= 60
fuzz: deps
	@echo "make: building layergate-fuzz with -sanitize=fuzzer (.build/fuzz) and the C client's fuzz target"
	$(SWIFTRUN) build --scratch-path .build/fuzz --product layergate-fuzz \
		-Xswiftc -sanitize=fuzzer -Xswiftc -DLAYERGATE_FUZZ -Xswiftc -use-ld=lld -Xswiftc -parse-as-library
	$(MAKE) -C clients/c build/fuzz/fuzz_response
	scripts/fuzz.sh $(FUZZ_SECONDS)

# Every speed goal next to its baseline, measured in one run: a table and a picture
# (scripts/bench-all.sh; not a test, about 12 minutes); see README, Measuring.
bench: deps c-client
	BENCH_ARGS="$(BENCH_ARGS)" scripts/bench-all.sh

# A longer torture run on the release build: make torture TORTURE_MINUTES=20
torture: deps
	$(SWIFTRUN) build -c release --product layergated
	$(SWIFTRUN) build -c release --product layergate
	.build/release/layergate torture --minutes $(TORTURE_MINUTES)

clean:
	rm -rf .build
	$(MAKE) -C clients/c clean
