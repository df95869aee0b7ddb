package modbus

import (
	"errors"
	"math"
	"testing"

	"github.com/megawatch/megawatch/internal/topology"
)

func reg(typ, word, byteOrder string, scale float64) topology.Register {
	return topology.Register{Type: typ, WordOrder: word, ByteOrder: byteOrder, Scale: scale, Function: "holding"}
}

func TestDecode(t *testing.T) {
	f := func(regs []uint16, r topology.Register, want float64) {
		t.Helper()
		got, err := Decode(regs, r)
		if err != nil || got != want {
			t.Fatalf("Decode(%04x, %s/%s/%s ×%v) = %v, %v; want %v", regs, r.Type, r.WordOrder, r.ByteOrder, r.Scale, got, err, want)
		}
		// Encode is the inverse on the raw value.
		if back := Encode(want/r.Scale, r); len(back) != len(regs) {
			t.Fatalf("Encode length %d", len(back))
		}
	}
	f([]uint16{0x1234}, reg("u16", "big", "big", 1), 0x1234)
	f([]uint16{0x3412}, reg("u16", "big", "little", 1), 0x1234)
	f([]uint16{0xffff}, reg("i16", "big", "big", 1), -1)
	f([]uint16{0xff9c}, reg("i16", "big", "big", 10), -1000)
	f([]uint16{0x0001, 0x86a0}, reg("u32", "big", "big", 1), 100000)
	f([]uint16{0x86a0, 0x0001}, reg("u32", "little", "big", 1), 100000)
	f([]uint16{0xa086, 0x0100}, reg("u32", "little", "little", 0.1), 10000)
	f([]uint16{0xffff, 0xfffe}, reg("i32", "big", "big", 1), -2)
	f([]uint16{0x4348, 0x0000}, reg("f32", "big", "big", 1000), 200000) // 200.0 kW
	f([]uint16{0x0000, 0x4348}, reg("f32", "little", "big", 1), 200)
	f([]uint16{0x0000, 0x0000, 0x0001, 0x0000}, reg("u64", "big", "big", 1), 65536)
	f([]uint16{0x0000, 0x0001, 0x0000, 0x0000}, reg("u64", "little", "big", 1), 65536)
	f([]uint16{0xffff, 0xffff, 0xffff, 0xfc18}, reg("i64", "big", "big", 1), -1000)
	f([]uint16{0x40c3, 0x8800, 0x0000, 0x0000}, reg("f64", "big", "big", 1), 10000)

	bad := func(regs []uint16, r topology.Register) {
		t.Helper()
		if v, err := Decode(regs, r); !errors.Is(err, ErrBadValue) {
			t.Fatalf("Decode(%04x, %s) = %v, %v; want ErrBadValue", regs, r.Type, v, err)
		}
	}
	bad([]uint16{0x7fc0, 0x0000}, reg("f32", "big", "big", 1)) // NaN: no reading, not 0 W
	bad([]uint16{0x7f80, 0x0000}, reg("f32", "big", "big", 1)) // +Inf
	bad([]uint16{0x0001}, reg("u32", "big", "big", 1))         // short read
	bad([]uint16{0x0001}, reg("u48", "big", "big", 1))
	bad([]uint16{0x7fef, 0xffff, 0xffff, 0xffff}, reg("f64", "big", "big", 1e10)) // overflows after scale
}

func TestEncodeRoundTrip(t *testing.T) {
	for _, typ := range []string{"u16", "i16", "u32", "i32", "f32", "u64", "i64", "f64"} {
		for _, wo := range []string{"big", "little"} {
			for _, bo := range []string{"big", "little"} {
				r := reg(typ, wo, bo, 0.5)
				raw := 1234.0
				if typ[0] == 'i' {
					raw = -1234
				}
				got, err := Decode(Encode(raw, r), r)
				if err != nil || got != raw*0.5 {
					t.Errorf("%s/%s/%s: %v, %v", typ, wo, bo, got, err)
				}
			}
		}
	}
}

// FuzzDecode: any registers decode to a finite number or an error, and
// byte/word order only permute: decoding the reversed encoding agrees.
func FuzzDecode(f *testing.F) {
	f.Add(uint16(0x4348), uint16(0), uint16(0), uint16(0), uint8(4), true, false, 1000.0)
	f.Add(uint16(0x7fc0), uint16(0), uint16(1), uint16(2), uint8(4), false, true, 1.0)
	f.Add(uint16(0xffff), uint16(0xffff), uint16(0xffff), uint16(0xfc18), uint8(6), false, false, 0.1)
	types := []string{"u16", "i16", "u32", "i32", "f32", "u64", "i64", "f64"}
	f.Fuzz(func(t *testing.T, a, b, c, d uint16, ti uint8, littleWord, littleByte bool, scale float64) {
		typ := types[int(ti)%len(types)]
		r := reg(typ, "big", "big", scale)
		if littleWord {
			r.WordOrder = "little"
		}
		if littleByte {
			r.ByteOrder = "little"
		}
		regs := []uint16{a, b, c, d}[:topology.RegisterWords(typ)]
		v, err := Decode(regs, r)
		if err != nil {
			return
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			t.Fatalf("Decode gave %v", v)
		}
		// The same bytes in the other orders decode to the same number.
		flip := r
		flip.WordOrder, flip.ByteOrder = "big", "big"
		canon := make([]uint16, len(regs))
		for i, w := range regs {
			j := i
			if r.WordOrder == "little" {
				j = len(regs) - 1 - i
			}
			if r.ByteOrder == "little" {
				w = w>>8 | w<<8
			}
			canon[j] = w
		}
		v2, err := Decode(canon, flip)
		if err != nil || (v2 != v && !(v != v && v2 != v2)) {
			t.Fatalf("%s %04x (%s/%s) = %v but canonical %04x = %v, %v", typ, regs, r.WordOrder, r.ByteOrder, v, canon, v2, err)
		}
	})
}
