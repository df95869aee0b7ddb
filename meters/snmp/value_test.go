package snmp

import (
	"errors"
	"math"
	"testing"

	"github.com/gosnmp/gosnmp"
)

func TestValue(t *testing.T) {
	f := func(typ gosnmp.Asn1BER, v any, scale, want float64) {
		t.Helper()
		got, err := Value(gosnmp.SnmpPDU{Name: ".1.3", Type: typ, Value: v}, scale)
		if err != nil || got != want {
			t.Fatalf("Value(%v %v ×%v) = %v, %v; want %v", typ, v, scale, got, err, want)
		}
	}
	f(gosnmp.Integer, 7345, 1, 7345)
	f(gosnmp.Integer, -5, 10, -50)
	f(gosnmp.Gauge32, uint(1234), 10, 12340) // PowerNet: hundredths of kW
	f(gosnmp.Counter32, uint(4294967295), 100, 429496729500)
	f(gosnmp.Uinteger32, uint32(7), 1, 7)
	f(gosnmp.Counter64, uint64(1)<<40, 1, 1<<40)
	f(gosnmp.OpaqueFloat, float32(12.5), 1000, 12500)
	f(gosnmp.OpaqueDouble, 0.25, 4, 1)
	f(gosnmp.OctetString, []byte(" 8123.5 "), 0.1, 812.35)
	f(gosnmp.Integer, 3, 0, 3) // scale 0 = 1

	bad := func(typ gosnmp.Asn1BER, v any, want error) {
		t.Helper()
		if got, err := Value(gosnmp.SnmpPDU{Name: ".1.3", Type: typ, Value: v}, 1); !errors.Is(err, want) {
			t.Fatalf("Value(%v %v) = %v, %v; want %v", typ, v, got, err, want)
		}
	}
	bad(gosnmp.NoSuchInstance, nil, ErrNoSuchObject) // never 0 W
	bad(gosnmp.NoSuchObject, nil, ErrNoSuchObject)
	bad(gosnmp.EndOfMibView, nil, ErrNoSuchObject)
	bad(gosnmp.Null, nil, ErrBadValue)
	bad(gosnmp.OctetString, []byte("n/a"), ErrBadValue)
	bad(gosnmp.OctetString, []byte("NaN"), ErrBadValue)
	bad(gosnmp.OpaqueFloat, float32(math.Inf(1)), ErrBadValue)
	bad(gosnmp.Integer, "12", ErrBadValue)
	bad(gosnmp.ObjectIdentifier, ".1.3", ErrBadValue)
	bad(gosnmp.IPAddress, "10.0.0.1", ErrBadValue)
}

// FuzzValue: whatever a PDU (or a hostile agent) sends, Value returns a
// finite number or an error — never NaN, ±Inf or a panic.
func FuzzValue(f *testing.F) {
	f.Add(uint8(0), int64(7345), uint64(0), 0.0, []byte(nil), 1.0)
	f.Add(uint8(2), int64(0), uint64(1234), 0.0, []byte(nil), 10.0)
	f.Add(uint8(5), int64(0), uint64(0), 12.5, []byte(nil), 1000.0)
	f.Add(uint8(7), int64(0), uint64(0), 0.0, []byte("8123.5"), 0.1)
	f.Add(uint8(7), int64(0), uint64(0), 0.0, []byte("1e400"), 1.0)
	f.Add(uint8(8), int64(0), uint64(0), 0.0, []byte(nil), 1.0)
	types := []gosnmp.Asn1BER{gosnmp.Integer, gosnmp.Counter32, gosnmp.Gauge32, gosnmp.Counter64, gosnmp.OpaqueFloat,
		gosnmp.OpaqueDouble, gosnmp.Uinteger32, gosnmp.OctetString, gosnmp.NoSuchInstance, gosnmp.Null, gosnmp.TimeTicks}
	f.Fuzz(func(t *testing.T, ti uint8, i int64, u uint64, fl float64, b []byte, scale float64) {
		typ := types[int(ti)%len(types)]
		var v any
		switch typ {
		case gosnmp.Integer:
			v = int(i)
		case gosnmp.Counter32, gosnmp.Gauge32, gosnmp.Uinteger32, gosnmp.TimeTicks:
			v = uint(uint32(u))
		case gosnmp.Counter64:
			v = u
		case gosnmp.OpaqueFloat:
			v = float32(fl)
		case gosnmp.OpaqueDouble:
			v = fl
		case gosnmp.OctetString:
			v = b
		}
		got, err := Value(gosnmp.SnmpPDU{Name: ".1", Type: typ, Value: v}, scale)
		if err == nil && (math.IsNaN(got) || math.IsInf(got, 0)) {
			t.Fatalf("Value(%v %v ×%v) = %v", typ, v, scale, got)
		}
	})
}
