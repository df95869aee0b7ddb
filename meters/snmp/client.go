package snmp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/megawatch/megawatch/internal/topology"
)

// Reading is one poll of a meter.
type Reading struct {
	PowerW    float64
	EnergyWh  float64
	HasEnergy bool
}

// Credentials are the resolved secrets of a meter (never logged).
type Credentials struct {
	Community string // v2c
	AuthPass  string // v3
	PrivPass  string // v3
}

// ErrAgent is wrapped when the agent answers with an SNMP error status.
var ErrAgent = errors.New("agent error")

// Client polls one meter. It is not safe for concurrent use: the poller
// runs one poll per meter at a time.
type Client struct {
	g     *gosnmp.GoSNMP
	fresh func() *gosnmp.GoSNMP
	oids  []string
	m     *topology.SNMPMeter
	open  bool
}

// New prepares a client for the meter at addr (host:port); no packet is
// sent until Read.
func New(addr string, m *topology.SNMPMeter, cred Credentials) (*Client, error) {
	host, portS, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("snmp address %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(portS, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("snmp address %q: port: %w", addr, err)
	}
	g, err := session(host, uint16(port), m, cred)
	if err != nil {
		return nil, err
	}
	// After a failed read the session starts over: a fresh socket and, for
	// v3, a fresh engine discovery (an agent that restarted has new engine
	// boots and time, and rejects the old ones as outside its time window).
	fresh := func() *gosnmp.GoSNMP {
		g, _ := session(host, uint16(port), m, cred) // checked above
		return g
	}
	c := &Client{g: g, fresh: fresh, m: m, oids: []string{m.Power.OID}}
	if m.Energy != nil {
		c.oids = append(c.oids, m.Energy.OID)
	}
	return c, nil
}

func session(host string, port uint16, m *topology.SNMPMeter, cred Credentials) (*gosnmp.GoSNMP, error) {
	var err error
	g := &gosnmp.GoSNMP{Target: host, Port: port, Transport: "udp", Retries: 0, MaxOids: gosnmp.MaxOids,
		Timeout: 2 * time.Second}
	switch m.Version {
	case "2c":
		g.Version, g.Community = gosnmp.Version2c, cred.Community
	case "3":
		g.Version, g.SecurityModel, g.ContextName = gosnmp.Version3, gosnmp.UserSecurityModel, m.ContextName
		usm := &gosnmp.UsmSecurityParameters{UserName: m.User}
		g.MsgFlags = gosnmp.NoAuthNoPriv
		if m.AuthProtocol != "" {
			if usm.AuthenticationProtocol, err = authProtocol(m.AuthProtocol); err != nil {
				return nil, err
			}
			usm.AuthenticationPassphrase = cred.AuthPass
			g.MsgFlags = gosnmp.AuthNoPriv
		}
		if m.PrivProtocol != "" {
			if usm.PrivacyProtocol, err = privProtocol(m.PrivProtocol); err != nil {
				return nil, err
			}
			usm.PrivacyPassphrase = cred.PrivPass
			g.MsgFlags = gosnmp.AuthPriv
		}
		g.SecurityParameters = usm
	default:
		return nil, fmt.Errorf("snmp version %q: want 2c or 3", m.Version)
	}
	return g, nil
}

func authProtocol(s string) (gosnmp.SnmpV3AuthProtocol, error) {
	switch strings.ToUpper(s) {
	case "MD5":
		return gosnmp.MD5, nil
	case "SHA":
		return gosnmp.SHA, nil
	case "SHA224":
		return gosnmp.SHA224, nil
	case "SHA256":
		return gosnmp.SHA256, nil
	case "SHA384":
		return gosnmp.SHA384, nil
	case "SHA512":
		return gosnmp.SHA512, nil
	}
	return 0, fmt.Errorf("snmp auth protocol %q unknown", s)
}

func privProtocol(s string) (gosnmp.SnmpV3PrivProtocol, error) {
	switch strings.ToUpper(s) {
	case "DES":
		return gosnmp.DES, nil
	case "AES":
		return gosnmp.AES, nil
	case "AES192":
		return gosnmp.AES192, nil
	case "AES256":
		return gosnmp.AES256, nil
	case "AES192C":
		return gosnmp.AES192C, nil
	case "AES256C":
		return gosnmp.AES256C, nil
	}
	return 0, fmt.Errorf("snmp priv protocol %q unknown", s)
}

// Close closes the socket.
func (c *Client) Close() error {
	if !c.open {
		return nil
	}
	c.open = false
	return c.g.Conn.Close()
}

// Read sends one GET for the power (and energy) objects and waits for the
// answer until ctx's deadline (no retries: the next window is the retry).
func (c *Client) Read(ctx context.Context) (Reading, error) {
	timeout := 2 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if timeout <= 0 {
		return Reading{}, fmt.Errorf("snmp %s: %w", c.g.Target, context.DeadlineExceeded)
	}
	c.g.Context, c.g.Timeout = ctx, timeout
	if !c.open {
		if err := c.g.Connect(); err != nil {
			return Reading{}, fmt.Errorf("snmp connect: %w", err)
		}
		c.open = true
	}
	pkt, err := c.g.Get(c.oids)
	if err != nil {
		_ = c.Close()
		c.g = c.fresh()
		return Reading{}, fmt.Errorf("snmp get: %w", err)
	}
	if pkt.Error != gosnmp.NoError {
		return Reading{}, fmt.Errorf("snmp get: %w: %v (index %d)", ErrAgent, pkt.Error, pkt.ErrorIndex)
	}
	if len(pkt.Variables) != len(c.oids) {
		return Reading{}, fmt.Errorf("snmp get: %w: %d varbinds for %d objects", ErrAgent, len(pkt.Variables), len(c.oids))
	}
	var rd Reading
	if rd.PowerW, err = Value(pkt.Variables[0], c.m.Power.Scale); err != nil {
		return Reading{}, fmt.Errorf("power: %w", err)
	}
	if c.m.Energy != nil {
		if rd.EnergyWh, err = Value(pkt.Variables[1], c.m.Energy.Scale); err != nil {
			return Reading{}, fmt.Errorf("energy: %w", err)
		}
		rd.HasEnergy = true
	}
	return rd, nil
}

// ErrorKind classifies a read error for metrics: timeout, no_such_object,
// decode, agent, auth or other.
func ErrorKind(err error) string {
	var ne net.Error
	msg := err.Error()
	switch {
	case errors.Is(err, ErrNoSuchObject):
		return "no_such_object"
	case errors.Is(err, ErrBadValue):
		return "decode"
	case errors.Is(err, ErrAgent):
		return "agent"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout(), strings.Contains(msg, "timeout"):
		return "timeout"
	case strings.Contains(msg, "authentic") || strings.Contains(msg, "unknown user") || strings.Contains(msg, "usm"):
		return "auth"
	case strings.Contains(msg, "refused"):
		return "refused"
	}
	return "other"
}
