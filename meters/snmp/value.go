// Package snmp reads facility meters (rack PDUs) over SNMP v2c and v3
// (github.com/gosnmp/gosnmp): one GET per poll for the power object and,
// when configured, the energy object.
package snmp

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/gosnmp/gosnmp"
)

// Errors wrapped by Value.
var (
	// ErrNoSuchObject: the agent has no such object or instance (a wrong OID
	// or index, or a PDU without that sensor).
	ErrNoSuchObject = errors.New("no such object")
	// ErrBadValue: the object holds no number (a wrong type, NaN, a
	// non-numeric string).
	ErrBadValue = errors.New("not a number")
)

// Value turns one varbind into its scaled number (W or Wh): integers,
// gauges, counters (32 and 64 bit), net-snmp's opaque float and double, and
// decimal strings (some PDUs serve DisplayString readings).
func Value(pdu gosnmp.SnmpPDU, scale float64) (float64, error) {
	if scale == 0 {
		scale = 1
	}
	var v float64
	switch pdu.Type {
	case gosnmp.NoSuchObject, gosnmp.NoSuchInstance, gosnmp.EndOfMibView:
		return 0, fmt.Errorf("%s: %w (%v)", pdu.Name, ErrNoSuchObject, pdu.Type)
	case gosnmp.Integer:
		n, ok := pdu.Value.(int)
		if !ok {
			return 0, fmt.Errorf("%s: %w: integer holds %T", pdu.Name, ErrBadValue, pdu.Value)
		}
		v = float64(n)
	case gosnmp.Counter32, gosnmp.Gauge32, gosnmp.Uinteger32, gosnmp.TimeTicks:
		switch n := pdu.Value.(type) {
		case uint:
			v = float64(n)
		case uint32:
			v = float64(n)
		default:
			return 0, fmt.Errorf("%s: %w: %v holds %T", pdu.Name, ErrBadValue, pdu.Type, pdu.Value)
		}
	case gosnmp.Counter64:
		n, ok := pdu.Value.(uint64)
		if !ok {
			return 0, fmt.Errorf("%s: %w: counter64 holds %T", pdu.Name, ErrBadValue, pdu.Value)
		}
		v = float64(n)
	case gosnmp.OpaqueFloat:
		f, ok := pdu.Value.(float32)
		if !ok {
			return 0, fmt.Errorf("%s: %w: opaque float holds %T", pdu.Name, ErrBadValue, pdu.Value)
		}
		v = float64(f)
	case gosnmp.OpaqueDouble:
		f, ok := pdu.Value.(float64)
		if !ok {
			return 0, fmt.Errorf("%s: %w: opaque double holds %T", pdu.Name, ErrBadValue, pdu.Value)
		}
		v = f
	case gosnmp.OctetString:
		b, ok := pdu.Value.([]byte)
		if !ok {
			return 0, fmt.Errorf("%s: %w: octet string holds %T", pdu.Name, ErrBadValue, pdu.Value)
		}
		s := strings.TrimSpace(string(b))
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || len(s) > 64 {
			return 0, fmt.Errorf("%s: %w: string %q", pdu.Name, ErrBadValue, truncate(s, 32))
		}
		v = f
	default:
		return 0, fmt.Errorf("%s: %w: type %v", pdu.Name, ErrBadValue, pdu.Type)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%s: %w: %v", pdu.Name, ErrBadValue, v)
	}
	out := v * scale
	if math.IsInf(out, 0) || math.IsNaN(out) {
		return 0, fmt.Errorf("%s: %w: %v × scale %v overflows", pdu.Name, ErrBadValue, v, scale)
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
