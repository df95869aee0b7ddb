// Package modbus reads facility meters over Modbus TCP
// (github.com/simonvetter/modbus): branch-circuit monitors and switchgear
// meters, one register value for active power and optionally one for energy.
package modbus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/megawatch/megawatch/internal/topology"
)

// ErrBadValue is wrapped when registers hold no usable number (NaN, ±Inf, a
// short read).
var ErrBadValue = errors.New("bad register value")

// Decode turns the registers of one value into its scaled number (W or Wh).
// byte_order swaps the two bytes of each register (big = Modbus standard,
// high byte first); word_order says whether the first register holds the
// most significant word (big) or the least (little).
func Decode(regs []uint16, r topology.Register) (float64, error) {
	n := int(topology.RegisterWords(r.Type))
	if n == 0 {
		return 0, fmt.Errorf("%w: unknown type %q", ErrBadValue, r.Type)
	}
	if len(regs) != n {
		return 0, fmt.Errorf("%w: %s needs %d registers, got %d", ErrBadValue, r.Type, n, len(regs))
	}
	var buf [8]byte
	b := buf[:2*n]
	for i, w := range regs {
		j := i
		if r.WordOrder == "little" {
			j = n - 1 - i
		}
		if r.ByteOrder == "little" {
			binary.LittleEndian.PutUint16(b[2*j:], w)
		} else {
			binary.BigEndian.PutUint16(b[2*j:], w)
		}
	}
	var v float64
	switch r.Type {
	case "u16":
		v = float64(binary.BigEndian.Uint16(b))
	case "i16":
		v = float64(int16(binary.BigEndian.Uint16(b)))
	case "u32":
		v = float64(binary.BigEndian.Uint32(b))
	case "i32":
		v = float64(int32(binary.BigEndian.Uint32(b)))
	case "f32":
		v = float64(math.Float32frombits(binary.BigEndian.Uint32(b)))
	case "u64":
		v = float64(binary.BigEndian.Uint64(b))
	case "i64":
		v = float64(int64(binary.BigEndian.Uint64(b)))
	case "f64":
		v = math.Float64frombits(binary.BigEndian.Uint64(b))
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%w: %s is %v", ErrBadValue, r.Type, v)
	}
	scale := r.Scale
	if scale == 0 {
		scale = 1
	}
	out := v * scale
	if math.IsInf(out, 0) || math.IsNaN(out) {
		return 0, fmt.Errorf("%w: %v × scale %v overflows", ErrBadValue, v, scale)
	}
	return out, nil
}

// Encode is Decode's inverse for tests and simulators: the registers that
// hold raw (before scale) as type r.Type in r's byte and word order.
func Encode(raw float64, r topology.Register) []uint16 {
	n := int(topology.RegisterWords(r.Type))
	var buf [8]byte
	b := buf[:2*n]
	switch r.Type {
	case "u16", "i16":
		binary.BigEndian.PutUint16(b, uint16(int64(raw)))
	case "u32", "i32":
		binary.BigEndian.PutUint32(b, uint32(int64(raw)))
	case "f32":
		binary.BigEndian.PutUint32(b, math.Float32bits(float32(raw)))
	case "u64":
		binary.BigEndian.PutUint64(b, uint64(raw))
	case "i64":
		binary.BigEndian.PutUint64(b, uint64(int64(raw)))
	case "f64":
		binary.BigEndian.PutUint64(b, math.Float64bits(raw))
	}
	regs := make([]uint16, n)
	for i := range regs {
		j := i
		if r.WordOrder == "little" {
			j = n - 1 - i
		}
		if r.ByteOrder == "little" {
			regs[i] = binary.LittleEndian.Uint16(b[2*j:])
		} else {
			regs[i] = binary.BigEndian.Uint16(b[2*j:])
		}
	}
	return regs
}
