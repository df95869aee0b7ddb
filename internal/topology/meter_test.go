package topology

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMetersLoad(t *testing.T) {
	topo, err := Load(filepath.Join("testdata", "meters.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(topo.Meters()); got != 1+2+8 {
		t.Fatalf("%d meters, want 11", got)
	}
	f := func(name, domain, addr string, check func(*Meter)) {
		t.Helper()
		m, ok := topo.Meter(name)
		if !ok {
			t.Fatalf("meter %s missing", name)
		}
		if m.Domain.Key() != domain || m.Address != addr {
			t.Fatalf("meter %s: domain %s address %s, want %s %s", name, m.Domain.Key(), m.Address, domain, addr)
		}
		check(m)
	}
	f("swgr-h1-main", "dc1/h1", "10.0.0.10:502", func(m *Meter) {
		mb := m.Modbus
		if mb.UnitID != 3 || mb.Power != (Register{Address: 3059, Type: "f32", WordOrder: "big", ByteOrder: "big", Function: "holding", Scale: 1000}) ||
			mb.Energy == nil || mb.Energy.Function != "input" || mb.Energy.Type != "i64" || mb.Energy.Scale != 1 || m.Phase != "L1-L3" {
			t.Fatalf("switchgear %+v %+v %+v", m, mb.Power, mb.Energy)
		}
	})
	f("bcm-r02", "dc1/h1/r02", "bcm-h1-r02.mgmt:5020", func(m *Meter) {
		if m.Modbus.UnitID != 1 || m.Modbus.Power.WordOrder != "little" || m.Modbus.Power.Scale != 0.1 || m.Timeout.String() != "500ms" {
			t.Fatalf("bcm %+v %+v", m, m.Modbus.Power)
		}
	})
	f("pdu-r01-rk02-a", "dc1/h1/r01/rk02", "pdu-r01-rk02-a.mgmt:161", func(m *Meter) {
		s := m.SNMP
		if s.Version != "2c" || s.Community.Env != "MW_PDU_COMMUNITY" || s.Power.OID != ".1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.5" ||
			s.Energy == nil || s.Energy.OID != ".1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.8" || m.Feed != "a" {
			t.Fatalf("raritan %+v", s)
		}
	})
	f("pdu-r02-rk01-b", "dc1/h1/r02/rk01", "[fd00::rk01]:1161", func(m *Meter) {
		s := m.SNMP
		if s.Version != "3" || s.AuthProtocol != "SHA256" || s.PrivProtocol != "AES" || s.PrivPass.Env != "MW_PDU_PRIV" ||
			s.AuthPass.File != "/etc/megawatch/pdu-auth" || s.Power.OID != ".1.3.6.1.4.1.1718.4.1.3.3.1.3.1.2" || s.Energy.Scale != 100 {
			t.Fatalf("sentry4 %+v", s)
		}
	})
	rk, _ := topo.Domain("dc1", "h1", "r01", "rk01")
	if len(rk.Meters) != 2 || rk.Meters[0].Name != "pdu-r01-rk01-a" {
		t.Fatalf("rack meters %v", rk.Meters)
	}
	// A secret names its file and key; the value never appears.
	t.Setenv("MW_PDU_COMMUNITY", "hush-hush")
	m, _ := topo.Meter("pdu-r01-rk01-a")
	if v, err := m.SNMP.Community.Resolve(); err != nil || v != "hush-hush" {
		t.Fatalf("community %q %v", v, err)
	}
	m, _ = topo.Meter("pdu-r01-rk01-b")
	_, err = m.SNMP.AuthPass.Resolve()
	if err == nil || !strings.Contains(err.Error(), "testdata/meters.yaml: domains[0].children[0].children[0].children[0].meters[1].snmp.auth_password_file") {
		t.Fatalf("missing secret file: %v", err)
	}
}

func TestMetersInvalid(t *testing.T) {
	doc := `
domains:
  - name: s
    capacity_kw: 10
    meters:
      - {name: m1, protocol: snmp, address: "pdu1", snmp: {community: public}}
    children:
      - name: h
        capacity_kw: 5
        meters:
          - {name: m1, protocol: snmp, address: "pdu2", snmp: {community_env: C, preset: nope}}
          - {name: "bad name", protocol: smtp, address: "x"}
          - {name: m3, protocol: snmp, address: "a:99999", snmp: {community_env: C, power_oid: "PDU2-MIB::x"}}
          - name: m4
            protocol: snmp
            address: p
            snmp: {version: "3", user: u, auth_protocol: SHA, priv_protocol: AES, priv_password_env: P, power_oid: .1.3.6.1.2}
          - name: m5
            protocol: modbus
            address: b
            modbus: {unit_id: 300, power: {address: 65535, type: f32, word_order: middle, function: coil, scale: -1}}
          - {name: m6, protocol: modbus, address: c, modbus: {energy: {address: 1, type: u48}}}
          - {name: m7, protocol: snmp, address: d, snmp: {community_env: C, community_file: /f, preset: apc-rpdu2-phase, index: [1, 2]}}
        children:
          - name: r
            capacity_kw: 5
            children:
              - name: k[1-2]
                capacity_kw: 1
                nodes: ["{rack}-n1"]
                meters:
                  - {name: "pdu-{pdu}", protocol: modbus, address: e, modbus: {power: {address: 1, type: u16}}}
`
	_, err := Parse([]byte(doc), "bad-meters.yaml")
	if err == nil {
		t.Fatal("invalid meters accepted")
	}
	// The inline community is an unknown key: the strict decoder stops there.
	if !strings.Contains(err.Error(), "bad-meters.yaml") || !strings.Contains(err.Error(), "community") {
		t.Fatalf("inline community: %v", err)
	}
	doc = strings.Replace(doc, "community: public", "community_env: C, preset: apc-rpdu2-device", 1)
	_, err = Parse([]byte(doc), "bad-meters.yaml")
	if err == nil {
		t.Fatal("invalid meters accepted")
	}
	msg := err.Error()
	h := "bad-meters.yaml: domains[0].children[0].meters"
	for _, want := range []string{
		h + `[0].name: meter "m1" is also defined at domains[0].meters[0]`,
		h + `[0].snmp.preset: unknown preset "nope"`,
		h + `[1].name: meter invalid subject token "bad name"`,
		h + `[1].protocol: must be snmp or modbus, got "smtp"`,
		h + `[2].address: "a:99999": want host:port`,
		h + `[2].snmp.power_oid: OID "PDU2-MIB::x"`,
		h + `[3].snmp.auth_password_env: required`,
		h + `[4].modbus.unit_id: must be 0..255`,
		h + `[4].modbus.power.address: must be 0..65535 with the whole value inside`,
		h + `[4].modbus.power.word_order: must be big or little`,
		h + `[4].modbus.power.function: must be holding or input`,
		h + `[4].modbus.power.scale: must be positive`,
		h + `[5].modbus.power: required`,
		h + `[5].modbus.energy.type: must be u16`,
		h + `[6].snmp.community_env: set only one of community_env and community_file`,
		h + `[6].snmp.index: preset apc-rpdu2-phase takes 1 index numbers`,
		"bad-meters.yaml: domains[0].children[0].children[0].children[0].meters[0].name: placeholder {pdu} is not an enclosing level",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	// The range's shared definition is reported once, not per rack.
	if n := strings.Count(msg, "placeholder {pdu}"); n != 2 {
		// names differ per rack, so each rack's name is checked (2 racks)
		t.Errorf("placeholder error %d times, want 2:\n%s", n, msg)
	}
}

// Every shipped topology still loads with its (example) meters.
func TestShippedTopologiesWithMeters(t *testing.T) {
	for _, name := range []string{"topology.yaml", "demo-topology.yaml"} {
		if _, err := Load(filepath.Join("..", "..", "configs", name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzParseMeters: any meters section gives meters or errors, never a
// panic; whatever loads has complete, consistent definitions.
func FuzzParseMeters(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "meters.yaml")); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`domains: [{name: s, capacity_kw: 1, meters: [{name: m, protocol: modbus, address: "h:1", modbus: {power: {address: 0, type: f64, word_order: little}}}], children: [{name: h, capacity_kw: 1, children: [{name: r, capacity_kw: 1, children: [{name: k, capacity_kw: 1, nodes: [n]}]}]}]}]`))
	f.Add([]byte(`domains: [{name: s, capacity_kw: 1, meters: [{name: m, protocol: snmp, address: "[::1]", snmp: {version: "3", user: u, preset: apc-rpdu2-device}}], children: [{name: h, capacity_kw: 1, children: [{name: r, capacity_kw: 1, children: [{name: k, capacity_kw: 1, nodes: [n]}]}]}]}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		topo, err := Parse(data, "fuzz.yaml")
		if err != nil {
			return
		}
		for _, m := range topo.Meters() {
			if m.Domain == nil || m.Address == "" || m.Name == "" || (m.SNMP == nil) == (m.Modbus == nil) {
				t.Fatalf("meter %+v incomplete", m)
			}
			if m.SNMP != nil && (m.SNMP.Power.OID == "" || m.SNMP.Power.Scale <= 0) {
				t.Fatalf("snmp meter %s: %+v", m.Name, m.SNMP)
			}
			if m.Modbus != nil && m.Modbus.Power.Words() == 0 {
				t.Fatalf("modbus meter %s: %+v", m.Name, m.Modbus.Power)
			}
		}
	})
}
