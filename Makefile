# megawatch developer tasks. CI runs .ci/run, which calls `make test`.
export CGO_ENABLED := 1
export CGO_CFLAGS := -O2 -g -Wno-deprecated-declarations

.PHONY: build test test-short generate proto fuzz bench tools

build:
	go build -o bin/megawatch ./cmd/megawatch

# The README's test command. Needs the test servers (scripts/install-test-servers.sh).
test:
	go test -race -count=1 -timeout 20m ./...

test-short:
	go test -short -count=1 ./...

# Regenerates internal/telemetry/*.pb.go. Needs protoc (Debian: protobuf-compiler)
# and protoc-gen-go (go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12).
generate proto:
	protoc --go_out=. --go_opt=module=github.com/megawatch/megawatch internal/telemetry/telemetry.proto
