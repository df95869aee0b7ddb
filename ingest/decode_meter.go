package ingest

import (
	"fmt"
	"math"

	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/encoding/protowire"
)

// meterDecoder parses MeterReports (internal/telemetry/telemetry.proto)
// into a reused telemetry.MeterReport, like reportDecoder: the path slice
// and the optional power and energy values live in the decoder, so a
// report costs only its strings. It accepts and rejects exactly what
// proto.Unmarshal does and yields the same message, less unknown fields
// (FuzzDecodeMeter checks this). Not safe for concurrent use; a decoded
// report is valid until the next decode.
type meterDecoder struct {
	r             telemetry.MeterReport
	power, energy float64
}

// maxKeptPath: a meter's path has one name per topology level.
const maxKeptPath = 16

func newMeterDecoder() *meterDecoder { return &meterDecoder{} }

// decode parses b; the result is valid until the next call.
func (d *meterDecoder) decode(b []byte) (*telemetry.MeterReport, error) {
	r := &d.r
	path := r.Path[:0]
	if cap(path) > maxKeptPath {
		path = nil
	}
	clear(r.Path) // the old strings are not pinned
	*r = telemetry.MeterReport{}
	r.Path = path
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
		case typ == protowire.BytesType && (num <= 3 || num == 8 || num == 9 || num == 11 || num == 15 || num == 16):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			s, err := protoString(v)
			if err != nil {
				return nil, fmt.Errorf("field %d: %w", num, err)
			}
			switch num {
			case 1:
				r.Meter = s
			case 2:
				r.Level = s
			case 3:
				r.Path = append(r.Path, s)
			case 8:
				r.Phase = s
			case 9:
				r.Feed = s
			case 11:
				r.Error = s
			case 15:
				r.Poller = s
			case 16:
				r.Version = s
			}
		case typ == protowire.VarintType && ((num >= 4 && num <= 5) || (num >= 10 && num <= 14 && num != 11)):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case 4:
				r.WindowEndUnixNs = int64(v)
			case 5:
				r.WindowMs = uint32(v)
			case 10:
				r.Stale = protowire.DecodeBool(v)
			case 12:
				r.Protocol = telemetry.MeterProtocol(int32(v))
			case 13:
				r.Seq = v
			case 14:
				r.ReadUnixNs = int64(v)
			}
		case typ == protowire.Fixed64Type && (num == 6 || num == 7):
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			if num == 6 {
				d.power = math.Float64frombits(v)
				r.PowerW = &d.power
			} else {
				d.energy = math.Float64frombits(v)
				r.EnergyWh = &d.energy
			}
		default: // unknown field, or a known one with another wire type: skipped
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return r, nil
}
