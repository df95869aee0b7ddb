package snmp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/megawatch/megawatch/internal/topology"
)

// preset resolves a preset through the topology loader, as a meter file would.
func preset(t *testing.T, snmpYAML string) *topology.SNMPMeter {
	t.Helper()
	doc := fmt.Sprintf(`domains: [{name: s, capacity_kw: 1, meters: [{name: m, protocol: snmp, address: "127.0.0.1", snmp: %s}],
  children: [{name: h, capacity_kw: 1, children: [{name: r, capacity_kw: 1, children: [{name: k, capacity_kw: 1, nodes: [n]}]}]}]}]`, snmpYAML)
	topo, err := topology.Parse([]byte(doc), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return topo.Meters()[0].SNMP
}

func read(t *testing.T, c *Client) (Reading, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.Read(ctx)
}

// v2c against Debian's snmpd: each preset's power and energy equal what the
// agent serves (cross-checked with Debian's snmpget), after the MIB's scale.
func TestReadSNMPDv2c(t *testing.T) {
	agent := testenv.StartSNMPD(t)
	raritan := preset(t, "{community_env: X, preset: raritan-pdu2-inlet, index: [1, 2]}")
	apc := preset(t, "{community_env: X, preset: apc-rpdu2-device}")
	st := preset(t, "{community_env: X, preset: servertech-sentry4-cord, index: [1, 1]}")
	custom := preset(t, "{community_env: X, power_oid: .1.3.6.1.4.1.99999.1.1, power_scale: 0.1}")
	agent.Set(raritan.Power.OID, "integer", 7345)
	agent.Set(raritan.Energy.OID, "gauge", 123456789)
	agent.Set(apc.Power.OID, "integer", 1234) // 12.34 kW
	agent.Set(apc.Energy.OID, "gauge", 98765) // 9876.5 kWh
	agent.Set(st.Power.OID, "gauge", 4100)
	agent.Set(st.Energy.OID, "counter", 4294967295)
	agent.Set(custom.Power.OID, "string", "8123.5")

	cred := Credentials{Community: agent.Community}
	f := func(m *topology.SNMPMeter, wantPower, wantEnergy float64) {
		t.Helper()
		c, err := New(agent.Addr, m, cred)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rd, err := read(t, c)
		if err != nil {
			t.Fatalf("%s: %v", m.Power.OID, err)
		}
		if rd.PowerW != wantPower || (m.Energy != nil) != rd.HasEnergy || rd.EnergyWh != wantEnergy {
			t.Fatalf("%s: %+v, want %v W %v Wh", m.Power.OID, rd, wantPower, wantEnergy)
		}
		// Debian's snmpget reads the same raw value.
		out, err := agent.SNMPGet(agent.V2Args(m.Power.OID)...)
		if err != nil {
			t.Fatal(err)
		}
		if raw := strings.Trim(out, `"`); fmt.Sprint(wantPower/m.Power.Scale) != raw {
			t.Fatalf("snmpget %s = %q, gosnmp gave %v / scale %v", m.Power.OID, out, rd.PowerW, m.Power.Scale)
		}
	}
	f(raritan, 7345, 123456789)
	f(apc, 12340, 9876500)
	f(st, 4100, 429496729500)
	f(custom, 812.35, 0)

	// An index the PDU does not have is "no such object", not 0 W.
	c, _ := New(agent.Addr, preset(t, "{community_env: X, preset: apc-rpdu2-phase, index: [3]}"), cred)
	defer c.Close()
	if _, err := read(t, c); !errors.Is(err, ErrNoSuchObject) || ErrorKind(err) != "no_such_object" {
		t.Fatalf("missing phase: %v", err)
	}
	// A wrong community gets no answer at all: a timeout.
	bad, _ := New(agent.Addr, apc, Credentials{Community: "wrong"})
	defer bad.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := bad.Read(ctx); err == nil || ErrorKind(err) != "timeout" {
		t.Fatalf("wrong community: %v (kind %s)", err, ErrorKind(err))
	}

	// A killed agent is an error; a restarted one answers the same client.
	ok, _ := New(agent.Addr, apc, cred)
	defer ok.Close()
	if _, err := read(t, ok); err != nil {
		t.Fatal(err)
	}
	agent.Kill()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if rd, err := ok.Read(ctx2); err == nil {
		t.Fatalf("killed agent answered %+v", rd)
	}
	agent.Restart()
	if rd, err := read(t, ok); err != nil || rd.PowerW != 12340 {
		t.Fatalf("after restart: %+v, %v", rd, err)
	}
}

// v3 authPriv (SHA-256, AES) works; a wrong auth password does not.
func TestReadSNMPDv3(t *testing.T) {
	agent := testenv.StartSNMPD(t)
	m := preset(t, `{version: "3", user: megawatch, auth_protocol: SHA256, auth_password_env: A, priv_protocol: AES, priv_password_env: P, preset: raritan-pdu2-inlet}`)
	agent.Set(m.Power.OID, "integer", 15250)
	agent.Set(m.Energy.OID, "gauge", 777)
	c, err := New(agent.Addr, m, Credentials{AuthPass: agent.V3.AuthPass, PrivPass: agent.V3.PrivPass})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd, err := read(t, c)
	if err != nil || rd.PowerW != 15250 || rd.EnergyWh != 777 {
		t.Fatalf("v3: %+v, %v", rd, err)
	}
	if out, err := agent.SNMPGet(agent.V3Args(m.Power.OID)...); err != nil || out != "15250" {
		t.Fatalf("snmpget v3: %q, %v", out, err)
	}
	agent.Set(m.Power.OID, "integer", 15300)
	if rd, err = read(t, c); err != nil || rd.PowerW != 15300 {
		t.Fatalf("v3 second poll: %+v, %v", rd, err)
	}

	// A restarted agent has new engine boots and time: the client discovers
	// them again instead of failing for ever.
	agent.Kill()
	ctxK, cancelK := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelK()
	if _, err := c.Read(ctxK); err == nil {
		t.Fatal("killed agent answered")
	}
	agent.Restart()
	if rd, err = read(t, c); err != nil || rd.PowerW != 15300 {
		t.Fatalf("v3 after agent restart: %+v, %v", rd, err)
	}

	wrong, _ := New(agent.Addr, m, Credentials{AuthPass: "not-the-password", PrivPass: agent.V3.PrivPass})
	defer wrong.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if rd, err := wrong.Read(ctx); err == nil {
		t.Fatalf("wrong auth password read %+v", rd)
	} else if strings.Contains(err.Error(), "not-the-password") || strings.Contains(err.Error(), agent.V3.PrivPass) {
		t.Fatalf("error shows a secret: %v", err)
	} else {
		t.Logf("wrong auth password: kind %s: %v", ErrorKind(err), err)
	}
}
