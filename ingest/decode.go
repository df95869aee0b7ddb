package ingest

import (
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/encoding/protowire"
)

// reportDecoder parses NodeReports (internal/telemetry/telemetry.proto)
// into a reused telemetry.NodeReport: GPUs and their optional fields live in
// slots reused from message to message, so a report costs only its five
// location strings (proto.Unmarshal: about 100 allocations per 8-GPU
// report). An intern table for the strings measured no faster and would
// cost memory per node. It accepts and rejects exactly
// what proto.Unmarshal does and yields the same message, less unknown
// fields (FuzzDecodeReport checks this). Not safe for concurrent use; a
// decoded report is valid until the next decode.
type reportDecoder struct {
	r     telemetry.NodeReport
	slots []*gpuSlot
	gpus  []*telemetry.Gpu
	// Values the report's optional node-power fields point to.
	nodePower, cpuPower uint32
	nodeEnergy          uint64
}

// gpuSlot holds one GPU message and the values its optional fields point to.
type gpuSlot struct {
	g                                     telemetry.Gpu
	power, pmin, pmax, limit, clock, util uint32
	energy, throttle                      uint64
	temp, mem                             int32
}

// Buffers a decoder keeps between messages (a node has 4–16 GPUs and
// window_ms/slot_ms = 10 slots).
const (
	maxKeptGpus  = 64
	maxKeptSlots = 1024
)

var errInvalidUTF8 = errors.New("string field contains invalid UTF-8")

func newReportDecoder() *reportDecoder { return &reportDecoder{} }

// protoString returns b as a string, checked for UTF-8 as proto3 requires.
func protoString(b []byte) (string, error) {
	if !utf8.Valid(b) {
		return "", errInvalidUTF8
	}
	return string(b), nil
}

// decode parses b; the result is valid until the next call.
func (d *reportDecoder) decode(b []byte) (*telemetry.NodeReport, error) {
	// A freak message (thousands of GPUs or slots) does not keep its
	// buffers for the life of the worker.
	if len(d.slots) > maxKeptGpus {
		d.slots, d.gpus = slices.Clone(d.slots[:maxKeptGpus]), nil // a fresh array: the old one pins every slot
	}
	if cap(d.r.SlotPowerW) > maxKeptSlots {
		d.r.SlotPowerW = nil
	}
	r := &d.r
	slotPower := r.SlotPowerW[:0]
	*r = telemetry.NodeReport{}
	r.SlotPowerW = slotPower
	d.gpus = d.gpus[:0]
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("tag: %w", protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return nil, fmt.Errorf("field number %d out of range", num)
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && ((num >= 1 && num <= 5) || num == 13 || num == 9 || num == 10):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			var err error
			switch num {
			case 1:
				r.Site, err = protoString(v)
			case 2:
				r.Hall, err = protoString(v)
			case 3:
				r.Row, err = protoString(v)
			case 4:
				r.Rack, err = protoString(v)
			case 5:
				r.Node, err = protoString(v)
			case 13:
				r.Version, err = protoString(v)
			case 9: // packed slot_power_w
				for len(v) > 0 {
					x, m := protowire.ConsumeVarint(v)
					if m < 0 {
						return nil, fmt.Errorf("slot_power_w: %w", protowire.ParseError(m))
					}
					v = v[m:]
					r.SlotPowerW = append(r.SlotPowerW, uint32(x))
				}
			case 10:
				g := d.gpu(len(d.gpus))
				if err := decodeGpu(v, g); err != nil {
					return nil, fmt.Errorf("gpus[%d]: %w", len(d.gpus), err)
				}
				d.gpus = append(d.gpus, &g.g)
			}
			if err != nil {
				return nil, fmt.Errorf("field %d: %w", num, err)
			}
		case typ == protowire.VarintType && ((num >= 6 && num <= 9) || (num >= 11 && num <= 19 && num != 13)):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case 6:
				r.WindowEndUnixNs = int64(v)
			case 7:
				r.WindowMs = uint32(v)
			case 8:
				r.SlotMs = uint32(v)
			case 9: // unpacked slot_power_w
				r.SlotPowerW = append(r.SlotPowerW, uint32(v))
			case 11:
				r.Seq = v
			case 12:
				r.Replayed = protowire.DecodeBool(v)
			case 14:
				r.BootId = v
			case 15:
				r.SlotMissingMask = uint32(v)
			case 16:
				r.NodePowerMw = set(&d.nodePower, uint32(v))
			case 17:
				r.NodePowerSource = telemetry.NodePowerSource(int32(v))
			case 18:
				r.CpuPowerMw = set(&d.cpuPower, uint32(v))
			case 19:
				r.NodeEnergyMj = set(&d.nodeEnergy, v)
			}
		default: // unknown field, or a known one with another wire type: skipped
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	r.Gpus = d.gpus
	return r, nil
}

// set stores v in *p and returns p (an optional field pointing into a slot).
func set[T uint32 | uint64 | int32](p *T, v T) *T {
	*p = v
	return p
}

// gpu returns the i-th GPU slot, cleared.
func (d *reportDecoder) gpu(i int) *gpuSlot {
	if i == len(d.slots) {
		d.slots = append(d.slots, new(gpuSlot))
	}
	s := d.slots[i]
	s.g = telemetry.Gpu{}
	return s
}

// decodeGpu parses one Gpu message into s.
func decodeGpu(b []byte, s *gpuSlot) error {
	g := &s.g
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("field number %d out of range", num)
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && num >= 1 && num <= 15 && num != 2 && num != 3:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case 1:
				g.Index = uint32(v)
			case 4:
				g.Health = telemetry.Health(int32(v))
			case 5:
				g.PowerMw = set(&s.power, uint32(v))
			case 6:
				g.PowerMinMw = set(&s.pmin, uint32(v))
			case 7:
				g.PowerMaxMw = set(&s.pmax, uint32(v))
			case 8:
				g.EnergyMj = set(&s.energy, v)
			case 9:
				g.TempC = set(&s.temp, int32(v))
			case 10:
				g.MemTempC = set(&s.mem, int32(v))
			case 11:
				g.PowerLimitMw = set(&s.limit, uint32(v))
			case 12:
				g.SmClockMhz = set(&s.clock, uint32(v))
			case 13:
				g.UtilPct = set(&s.util, uint32(v))
			case 14:
				g.ThrottleReasons = set(&s.throttle, v)
			case 15:
				g.EnergyEpoch = uint32(v)
			}
		case typ == protowire.BytesType && (num == 2 || num == 3 || num == 16):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			var err error
			switch num { // rare: inventory every 60th report, errors
			case 2:
				g.Uuid, err = protoString(v)
			case 3:
				g.Model, err = protoString(v)
			case 16:
				g.Error, err = protoString(v)
			}
			if err != nil {
				return fmt.Errorf("field %d: %w", num, err)
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
