package aggregate

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// report is the part of a telemetry.NodeReport the aggregator needs,
// decoded without allocating: strings are slices into the message.
type report struct {
	site, hall, row, rack, node []byte
	windowEndNs                 int64
	windowMs, slotMs            uint32
	slots                       []uint32 // reused buffer
	powerMW                     uint64   // sum of the healthy GPUs' mean power, milliwatts
	hasPower                    bool
	gpus, healthy, throttled    int
	gpuTempMax, memTempMax      int32 // noTemp when no GPU reported one
}

const noTemp = math.MinInt32

// ThrottleMask selects the NVML clock-event reasons counted as throttling:
// HW slowdown (0x8), SW thermal (0x20), HW thermal (0x40) and HW power
// brake (0x80). SW power cap (0x4) is normal operation under a power limit.
const ThrottleMask = 0x8 | 0x20 | 0x40 | 0x80

var errTruncated = errors.New("truncated message")

// decodeReport parses a NodeReport (see internal/telemetry/telemetry.proto).
// Unknown fields are skipped, so newer collectors stay readable.
func decodeReport(b []byte, r *report) error {
	*r = report{slots: r.slots[:0], gpuTempMax: noTemp, memTempMax: noTemp}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num >= 1 && num <= 5 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case 1:
				r.site = v
			case 2:
				r.hall = v
			case 3:
				r.row = v
			case 4:
				r.rack = v
			case 5:
				r.node = v
			}
		case (num == 6 || num == 7 || num == 8) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case 6:
				r.windowEndNs = int64(v)
			case 7:
				r.windowMs = uint32(v)
			case 8:
				r.slotMs = uint32(v)
			}
		case num == 9 && typ == protowire.BytesType: // packed slot_power_w
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("slot_power_w: %w", protowire.ParseError(n))
			}
			b = b[n:]
			for len(v) > 0 {
				x, m := protowire.ConsumeVarint(v)
				if m < 0 {
					return fmt.Errorf("slot_power_w: %w", protowire.ParseError(m))
				}
				v = v[m:]
				if err := r.addSlot(x); err != nil {
					return err
				}
			}
		case num == 9 && typ == protowire.VarintType: // unpacked slot_power_w
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("slot_power_w: %w", protowire.ParseError(n))
			}
			b = b[n:]
			if err := r.addSlot(x); err != nil {
				return err
			}
		case num == 10 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("gpus: %w", protowire.ParseError(n))
			}
			b = b[n:]
			if err := decodeGPU(v, r); err != nil {
				return fmt.Errorf("gpus[%d]: %w", r.gpus, err)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return nil
}

// addSlot appends one slot_power_w value (packed or not), at most 1024.
func (r *report) addSlot(x uint64) error {
	if len(r.slots) >= 1024 {
		return errors.New("slot_power_w: more than 1024 slots")
	}
	r.slots = append(r.slots, uint32(x))
	return nil
}

func decodeGPU(b []byte, r *report) error {
	var health, powerMW, throttle uint64
	var hasPower bool
	temp, mem := int32(noTemp), int32(noTemp)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.VarintType || (num != 4 && num != 5 && num != 9 && num != 10 && num != 14) {
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch num {
		case 4:
			health = v
		case 5:
			powerMW, hasPower = uint64(uint32(v)), true
		case 9:
			temp = int32(v)
		case 10:
			mem = int32(v)
		case 14:
			throttle = v
		}
	}
	r.gpus++
	if health != 0 {
		return nil // lost / timed out / error: left out of sums, never 0 W
	}
	r.healthy++
	if hasPower {
		r.powerMW += powerMW
		r.hasPower = true
	}
	if temp != noTemp && temp > r.gpuTempMax {
		r.gpuTempMax = temp
	}
	if mem != noTemp && mem > r.memTempMax {
		r.memTempMax = mem
	}
	if throttle&ThrottleMask != 0 {
		r.throttled++
	}
	return nil
}
