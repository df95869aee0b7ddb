package modbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/megawatch/megawatch/internal/topology"
)

// Reading is one poll of a meter.
type Reading struct {
	PowerW    float64
	EnergyWh  float64
	HasEnergy bool
}

// Client talks to one Modbus TCP device (one address). Meters on the same
// device (the circuits of a branch-circuit monitor) share it, and their
// requests are serialised: many devices accept only a few connections.
type Client struct {
	addr    string
	timeout time.Duration
	mu      sync.Mutex
	c       *mb.ModbusClient // nil: not connected
}

// NewClient returns a client for host:port; it connects on first use.
// timeout bounds each request on the connection (a read's context deadline
// bounds the connect and makes a late read fail fast).
func NewClient(addr string, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = time.Second
	}
	return &Client{addr: addr, timeout: timeout}
}

// Close closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeLocked()
}

func (c *Client) closeLocked() error {
	if c.c == nil {
		return nil
	}
	err := c.c.Close()
	c.c = nil
	return err
}

// Read reads a meter's power (and energy) registers within ctx's deadline.
// A Modbus exception (e.g. illegal data address) keeps the connection; any
// other error closes it so that the next poll reconnects.
func (c *Client) Read(ctx context.Context, m *topology.ModbusMeter) (Reading, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	timeout := time.Until(deadline(ctx))
	if timeout <= 0 {
		return Reading{}, fmt.Errorf("modbus %s: %w", c.addr, context.DeadlineExceeded)
	}
	if err := c.connect(ctx, timeout); err != nil {
		return Reading{}, err
	}
	var rd Reading
	var err error
	if rd.PowerW, err = c.value(m.UnitID, m.Power); err != nil {
		return Reading{}, fmt.Errorf("power register %d: %w", m.Power.Address, err)
	}
	if m.Energy != nil {
		if rd.EnergyWh, err = c.value(m.UnitID, *m.Energy); err != nil {
			return Reading{}, fmt.Errorf("energy register %d: %w", m.Energy.Address, err)
		}
		rd.HasEnergy = true
	}
	return rd, nil
}

func deadline(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(5 * time.Second)
}

// connect opens the connection if needed. The library dials with a fixed
// 5 s timeout, so a probe dial within the meter's timeout goes first: an
// unreachable device costs the meter's timeout, not 5 s.
func (c *Client) connect(ctx context.Context, timeout time.Duration) error {
	if c.c != nil {
		return nil
	}
	d := net.Dialer{Timeout: timeout}
	probe, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return fmt.Errorf("modbus connect %s: %w", c.addr, err)
	}
	probe.Close()
	cl, err := mb.NewClient(&mb.ClientConfiguration{URL: "tcp://" + c.addr, Timeout: min(c.timeout, max(timeout, c.timeout/2)),
		Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		return fmt.Errorf("modbus %s: %w", c.addr, err)
	}
	if err := cl.Open(); err != nil {
		return fmt.Errorf("modbus connect %s: %w", c.addr, err)
	}
	c.c = cl
	return nil
}

func (c *Client) value(unit uint8, r topology.Register) (float64, error) {
	if err := c.c.SetUnitId(unit); err != nil {
		return 0, err
	}
	typ := mb.HOLDING_REGISTER
	if r.Function == "input" {
		typ = mb.INPUT_REGISTER
	}
	regs, err := c.c.ReadRegisters(r.Address, r.Words(), typ)
	if err != nil {
		if !isException(err) {
			_ = c.closeLocked()
		}
		return 0, err
	}
	return Decode(regs, r)
}

// isException reports whether err is a Modbus exception response from the
// device (the connection is fine).
func isException(err error) bool {
	var e mb.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e {
	case mb.ErrIllegalFunction, mb.ErrIllegalDataAddress, mb.ErrIllegalDataValue, mb.ErrServerDeviceFailure,
		mb.ErrAcknowledge, mb.ErrServerDeviceBusy, mb.ErrMemoryParityError, mb.ErrGWPathUnavailable, mb.ErrGWTargetFailedToRespond:
		return true
	}
	return false
}

// ErrorKind classifies a read error for metrics: timeout, connect,
// exception, decode or other.
func ErrorKind(err error) string {
	var ne net.Error
	var e mb.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, mb.ErrRequestTimedOut), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, ErrBadValue):
		return "decode"
	case isException(err):
		return "exception"
	case errors.As(err, &e):
		return "protocol"
	case errors.As(err, new(*net.OpError)):
		return "connect"
	}
	return "other"
}
