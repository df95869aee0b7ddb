#!/usr/bin/env bash
# Installs the real servers that megawatch's integration tests run against:
#   nats-server 2.15.2, influxd 1.8.10 (both from the Go module proxy),
#   Alertmanager (Debian's prometheus-alertmanager) and Chromium (Debian) for the browser test,
#   snmpd, snmp and python3-pymodbus (Debian) for the facility meter tests.
# Binaries built with Go go to $MEGAWATCH_TOOLS/bin (default ~/.cache/megawatch/tools/bin),
# where internal/testenv looks for them. Idempotent: present versions are kept.
set -euo pipefail
TOOLS="${MEGAWATCH_TOOLS:-$HOME/.cache/megawatch/tools}"
mkdir -p "$TOOLS/bin"
export GOBIN="$TOOLS/bin"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

if ! "$GOBIN/nats-server" --version 2>/dev/null | grep -q 'v2.15.2'; then
  echo "installing nats-server v2.15.2 into $GOBIN"
  go install github.com/nats-io/nats-server/v2@v2.15.2
fi
if ! "$GOBIN/influxd" version 2>/dev/null | grep -q 'v1.8.10'; then
  echo "building influxd v1.8.10 into $GOBIN (about 1 minute)"
  go install -ldflags "-s -w -X main.version=1.8.10" github.com/influxdata/influxdb/cmd/influxd@v1.8.10
fi

need_apt=()
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
# facility meter tests (meters/): net-snmp's agent and tools, pymodbus as a Modbus TCP server
[ -x /usr/sbin/snmpd ] || command -v snmpd >/dev/null 2>&1 || need_apt+=(snmpd)
command -v snmpget >/dev/null 2>&1 || need_apt+=(snmp)
/usr/bin/python3 -c 'import pymodbus' >/dev/null 2>&1 || need_apt+=(python3-pymodbus)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)   # systemd-analyze verify (configs/systemd_test.go)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing with apt-get: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "warning: not root, cannot apt-get install ${need_apt[*]}; the tests that need them skip (and fail under CI=true)" >&2
  fi
fi
echo "test servers ready in $GOBIN"
