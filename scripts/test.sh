#!/usr/bin/env bash
# Runs every test of megawatch, integration tests included, against the real
# servers: installs them first (nats-server and influxd with `go install`;
# prometheus-alertmanager and chromium with apt-get when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export CGO_ENABLED=1
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations}"
scripts/install-test-servers.sh
go vet ./...
go test -race -count=1 -timeout 25m "$@" ./...
