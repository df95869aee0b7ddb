package meters

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
	"github.com/megawatch/megawatch/meters/modbus"
	"github.com/megawatch/megawatch/meters/snmp"
)

// Reading is one successful meter read.
type Reading struct {
	PowerW    float64
	EnergyWh  float64
	HasEnergy bool
}

// Reader reads one meter. Read is never called concurrently for one meter.
type Reader interface {
	Read(ctx context.Context) (Reading, error)
	// ErrorKind classifies a Read error for metrics.
	ErrorKind(err error) string
	Close() error
}

// WindowReader is a Reader whose value belongs to a window rather than to
// the moment of the read (simulated meters): the poller calls ReadWindow
// with the window it polls instead of Read.
type WindowReader interface {
	Reader
	ReadWindow(ctx context.Context, windowEnd time.Time, window time.Duration) (Reading, error)
}

type snmpReader struct{ c *snmp.Client }

func (r snmpReader) Read(ctx context.Context) (Reading, error) {
	rd, err := r.c.Read(ctx)
	return Reading(rd), err
}
func (snmpReader) ErrorKind(err error) string { return snmp.ErrorKind(err) }
func (r snmpReader) Close() error             { return r.c.Close() }

type modbusReader struct {
	c *modbus.Client
	m *topology.ModbusMeter
}

func (r modbusReader) Read(ctx context.Context) (Reading, error) {
	rd, err := r.c.Read(ctx, r.m)
	return Reading(rd), err
}
func (modbusReader) ErrorKind(err error) string { return modbus.ErrorKind(err) }
func (modbusReader) Close() error               { return nil } // the shared device client is closed by the poller

// readers builds a Reader per meter, resolving credentials (errors name the
// topology file and key, never the value). Modbus meters on one device
// share one connection.
func readers(ms []*topology.Meter, timeout time.Duration) (map[*topology.Meter]Reader, []*modbus.Client, error) {
	out := make(map[*topology.Meter]Reader, len(ms))
	devices := map[string]*modbus.Client{}
	var shared []*modbus.Client
	var errs []error
	secretErrs := map[string]int{}              // one line per broken key, not per meter of a range
	deviceTimeout := map[string]time.Duration{} // the longest timeout of the meters on a Modbus device
	for _, m := range ms {
		if m.Modbus != nil {
			to := timeout
			if m.Timeout > 0 {
				to = m.Timeout
			}
			deviceTimeout[m.Address] = max(deviceTimeout[m.Address], to)
		}
	}
	for _, m := range ms {
		switch {
		case m.SNMP != nil:
			var cred snmp.Credentials
			var err error
			resolve := func(s topology.Secret, dst *string) {
				if err != nil || !s.Set() {
					return
				}
				*dst, err = s.Resolve()
			}
			resolve(m.SNMP.Community, &cred.Community)
			resolve(m.SNMP.AuthPass, &cred.AuthPass)
			resolve(m.SNMP.PrivPass, &cred.PrivPass)
			if err != nil {
				if secretErrs[err.Error()]++; secretErrs[err.Error()] == 1 {
					errs = append(errs, fmt.Errorf("%w (meter %s)", err, m.Name))
				}
				continue
			}
			c, err := snmp.New(m.Address, m.SNMP, cred)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %s: meter %s: %w", m.Source, m.Key, m.Name, err))
				continue
			}
			out[m] = snmpReader{c}
		case m.Modbus != nil:
			c, ok := devices[m.Address]
			if !ok {
				c = modbus.NewClient(m.Address, deviceTimeout[m.Address])
				devices[m.Address] = c
				shared = append(shared, c)
			}
			out[m] = modbusReader{c: c, m: m.Modbus}
		default:
			errs = append(errs, fmt.Errorf("%s: %s: meter %s: no protocol", m.Source, m.Key, m.Name))
		}
	}
	for e, n := range secretErrs {
		if n > 1 {
			errs = append(errs, fmt.Errorf("… and %d more meters with the same problem: %s", n-1, e))
		}
	}
	return out, shared, errors.Join(errs...)
}

func protocolOf(m *topology.Meter) telemetry.MeterProtocol {
	switch m.Protocol {
	case topology.ProtocolSNMP:
		return telemetry.MeterProtocol_METER_PROTOCOL_SNMP
	case topology.ProtocolModbus:
		return telemetry.MeterProtocol_METER_PROTOCOL_MODBUS
	}
	return telemetry.MeterProtocol_METER_PROTOCOL_UNSPECIFIED
}
