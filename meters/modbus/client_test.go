package modbus

import (
	"context"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/megawatch/megawatch/internal/topology"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Against Debian's pymodbus: power and energy registers of every width and
// order come back exactly as served (after scale); an unmapped register is
// an exception; a killed server is an error and a restarted one reads again.
func TestReadPymodbus(t *testing.T) {
	srv := testenv.StartModbusServer(t)
	sw := &topology.ModbusMeter{UnitID: 1,
		Power:  topology.Register{Address: 3059, Type: "f32", WordOrder: "big", ByteOrder: "big", Function: "holding", Scale: 1000},
		Energy: &topology.Register{Address: 3203, Type: "i64", WordOrder: "big", ByteOrder: "big", Function: "input", Scale: 1}}
	bcm := &topology.ModbusMeter{UnitID: 7,
		Power: topology.Register{Address: 100, Type: "u32", WordOrder: "little", ByteOrder: "big", Function: "holding", Scale: 0.1}}
	srv.SetHolding(3059, Encode(1234.5, sw.Power)...)
	srv.SetInput(3203, Encode(98765432101, *sw.Energy)...)
	srv.SetHolding(100, Encode(456789, bcm.Power)...)

	c := NewClient(srv.Addr, 2*time.Second)
	t.Cleanup(func() { c.Close() })
	rd, err := c.Read(ctxT(t), sw)
	if err != nil {
		t.Fatal(err)
	}
	if rd.PowerW != 1234.5*1000 || !rd.HasEnergy || rd.EnergyWh != 98765432101 {
		t.Fatalf("switchgear reading %+v", rd)
	}
	rd, err = c.Read(ctxT(t), bcm)
	if err != nil || rd.PowerW != 456789*0.1 || rd.HasEnergy {
		t.Fatalf("bcm reading %+v, %v", rd, err)
	}
	// A new value is read on the next poll.
	srv.SetHolding(3059, Encode(-2.25, sw.Power)...)
	if rd, err = c.Read(ctxT(t), sw); err != nil || rd.PowerW != -2250 {
		t.Fatalf("after change: %+v, %v", rd, err)
	}

	missingReg := &topology.ModbusMeter{UnitID: 1, Power: topology.Register{Address: 4000, Type: "u16", WordOrder: "big", ByteOrder: "big", Function: "holding", Scale: 1}}
	if _, err := c.Read(ctxT(t), missingReg); err == nil || ErrorKind(err) != "exception" {
		t.Fatalf("unmapped register: %v (kind %s), want an exception", err, ErrorKind(err))
	}

	srv.Kill()
	if _, err := c.Read(ctxT(t), sw); err == nil {
		t.Fatal("read from a killed server succeeded")
	} else if k := ErrorKind(err); k != "connect" && k != "timeout" && k != "other" {
		t.Logf("killed server: kind %s: %v", k, err)
	}
	srv.Restart()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rd, err = c.Read(ctxT(t), sw)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reading after restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if rd.PowerW != -2250 {
		t.Fatalf("after restart %+v", rd)
	}
}

// An unreachable device costs the meter's timeout, not the library's 5 s dial.
func TestReadTimeout(t *testing.T) {
	c := NewClient("127.0.0.1:1", time.Second) // nothing listens: refused at once
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	m := &topology.ModbusMeter{UnitID: 1, Power: topology.Register{Type: "u16", WordOrder: "big", ByteOrder: "big", Function: "holding", Scale: 1}}
	if _, err := c.Read(ctx, m); err == nil || ErrorKind(err) != "connect" {
		t.Fatalf("refused: %v (kind %s)", err, ErrorKind(err))
	}
}
