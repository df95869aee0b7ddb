package testenv

import (
	"testing"
)

// MeterServersHint is how to install the facility-meter test servers.
const MeterServersHint = "apt-get install snmpd snmp python3-pymodbus (Debian; scripts/install-test-servers.sh does it as root)"

// missing skips the test (fails it under CI=true) for a missing meter test server.
func missing(t testing.TB, what string, err error) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s: %v: %s", what, err, MeterServersHint)
	}
	t.Skipf("%s: %v: %s", what, err, MeterServersHint)
}
