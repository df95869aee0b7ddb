package aggregate

import (
	"errors"
	"fmt"
	"math"

	"github.com/megawatch/megawatch/internal/plausible"
	"github.com/megawatch/megawatch/internal/telemetry"
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
	// bounds are the plausibility bounds decodeReport applies (nil:
	// plausible.Default()); kept across decodes.
	bounds *plausible.Bounds
	// gpusBoundW is the sum of the GPUs' plausibility bounds (slot bound).
	gpusBoundW   float64
	bd           plausible.Bounds // *bounds or the defaults, for this decode
	nodePowerMW  uint64
	hasNodePower bool
	nodePowerSrc telemetry.NodePowerSource
	cpuPowerMW   uint64
	hasCPUPower  bool
}

// ErrImplausible is wrapped by decodeReport's error for a report with a
// value beyond the plausibility bounds (internal/plausible): the report is
// left out of every sum, like an undecodable one, and counted with them.
var ErrImplausible = errors.New("implausible value")

// ErrForgedID is wrapped by CheckReportMsgID's error.
var ErrForgedID = telemetry.ErrForgedMsgID

// CheckReportMsgID checks a NodeReport's Nats-Msg-Id header against the
// node and window end in its payload (telemetry.CheckMsgID): a forged id
// could make JetStream's dedup drop another node's or window's report.
// An empty id (core NATS publishers without the header) passes. Call it
// with the message's header before HandleReport; it reads only the
// report's top-level fields and allocates nothing.
func CheckReportMsgID(data []byte, msgID string) error {
	if msgID == "" {
		return nil
	}
	var node []byte
	var end int64
	for b := data; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 5 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			node, b = v, b[n:]
		case num == 6 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			end, b = int64(v), b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return telemetry.CheckMsgID(msgID, string(node), end)
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
	bounds := r.bounds
	*r = report{slots: r.slots[:0], gpuTempMax: noTemp, memTempMax: noTemp, bounds: bounds}
	if bounds != nil {
		r.bd = *bounds
	} else {
		r.bd = plausible.Default()
	}
	if err := decodeFields(b, r); err != nil {
		return err
	}
	return r.plausible()
}

// plausible checks what decodeFields summed against the bounds: the
// GPUs were checked one by one; the slots must stay below the sum of their
// bounds, node power below the node bound.
func (r *report) plausible() error {
	bd := &r.bd
	slotBound := min(r.gpusBoundW, bd.NodeMaxW)
	if r.gpus == 0 {
		slotBound = bd.NodeMaxW
	}
	for i, p := range r.slots {
		if float64(p) > slotBound {
			return fmt.Errorf("%w: slot_power_w[%d] %d W exceeds the sum of the GPUs' bounds %v W", ErrImplausible, i, p, slotBound)
		}
	}
	if nb := bd.NodeBoundW(r.gpusBoundW); r.hasNodePower && float64(r.nodePowerMW)/1000 > nb {
		return fmt.Errorf("%w: node_power_mw %d exceeds the node bound %v W", ErrImplausible, r.nodePowerMW, nb)
	}
	if nb := bd.NodeBoundW(r.gpusBoundW); r.hasCPUPower && float64(r.cpuPowerMW)/1000 > nb {
		return fmt.Errorf("%w: cpu_power_mw %d exceeds the node bound %v W", ErrImplausible, r.cpuPowerMW, nb)
	}
	return nil
}

func decodeFields(b []byte, r *report) error {
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
		case num == 16 && typ == protowire.VarintType: // node_power_mw
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("node_power_mw: %w", protowire.ParseError(n))
			}
			b = b[n:]
			r.nodePowerMW, r.hasNodePower = uint64(uint32(v)), true
		case (num == 17 || num == 18) && typ == protowire.VarintType: // node_power_source, cpu_power_mw
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			if num == 17 {
				r.nodePowerSrc = telemetry.NodePowerSource(int32(v))
			} else {
				r.cpuPowerMW, r.hasCPUPower = uint64(uint32(v)), true
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
	var minMW, maxMW, limitMW uint32
	var hasMin, hasMax, hasLimit bool
	temp, mem := int32(noTemp), int32(noTemp)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.VarintType || (num != 4 && num != 5 && num != 6 && num != 7 && num != 9 && num != 10 && num != 11 && num != 14) {
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
		case 6:
			minMW, hasMin = uint32(v), true
		case 7:
			maxMW, hasMax = uint32(v), true
		case 11:
			limitMW, hasLimit = uint32(v), true
		case 14:
			throttle = v
		}
	}
	r.gpus++
	bd := &r.bd
	limitW := -1.0
	if hasLimit {
		if limitW = float64(limitMW) / 1000; limitW > bd.GPUMaxW {
			return fmt.Errorf("%w: power_limit_mw %d beyond gpu_max_w", ErrImplausible, limitMW)
		}
	}
	r.gpusBoundW += bd.GPUBoundW(limitW)
	if health != 0 {
		return nil // lost / timed out / error: left out of sums, never 0 W
	}
	// One comparison on the common path; the error names the value.
	var top uint64
	if hasPower {
		top = powerMW
	}
	if hasMin {
		top = max(top, uint64(minMW))
	}
	if hasMax {
		top = max(top, uint64(maxMW))
	}
	if float64(top)/1000 > bd.GPUBoundW(limitW) {
		for _, f := range [...]struct {
			name string
			has  bool
			v    uint64
		}{{"power_mw", hasPower, powerMW}, {"power_min_mw", hasMin, uint64(minMW)}, {"power_max_mw", hasMax, uint64(maxMW)}} {
			if f.has {
				if err := bd.GPUPower(f.name, float64(f.v)/1000, limitW); err != nil {
					return fmt.Errorf("%w: %w", ErrImplausible, err)
				}
			}
		}
	}
	if temp != noTemp && (temp > bd.MaxTempC || temp < bd.MinTempC) {
		return fmt.Errorf("%w: %w", ErrImplausible, bd.Temp("temp_c", temp))
	}
	if mem != noTemp && (mem > bd.MaxTempC || mem < bd.MinTempC) {
		return fmt.Errorf("%w: %w", ErrImplausible, bd.Temp("mem_temp_c", mem))
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
