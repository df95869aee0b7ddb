// Package facilitytest holds the end-to-end scenario tests of facility
// power (issue 12): a hall whose rack PDUs are served by Debian's snmpd and
// whose switchgear meter is served by pymodbus, polled by the real
// `megawatch meters` poller; nodes whose node power comes from a Redfish BMC
// (DMTF's mockup), an ACPI power meter in a fixture sysfs tree and the
// collector's model, read by real collectors over simulated GPUs; the rest
// of the hall published with known values; a real nats-server with
// JetStream; the real aggregator and rule engine; a real Alertmanager.
//
// The tests assert what comes out: the rollups on megawatch.v1.rollup.>
// carry exactly the watts the servers and nodes served, and the divergence
// alert of configs/alerts.yaml reaches Alertmanager and resolves there.
//
// The package has no non-test code. The servers it needs are installed by
// scripts/install-test-servers.sh; under CI=true a missing one fails the
// tests with how to install it.
package facilitytest
