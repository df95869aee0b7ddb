package topology

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/megawatch/megawatch/internal/config"
	"github.com/megawatch/megawatch/internal/telemetry"
)

// Meter protocols.
const (
	ProtocolSNMP   = "snmp"
	ProtocolModbus = "modbus"
)

// FileMeter is one facility meter in the topology file, on the domain it
// measures. Name and Address may use {site}, {hall}, {row}, {rack} (any
// level): a meter on a range of domains (rk[01-40]) is one meter per domain.
type FileMeter struct {
	Name     string `yaml:"name"`
	Protocol string `yaml:"protocol"` // snmp or modbus
	Address  string `yaml:"address"`  // host[:port]; port 161 (snmp) or 502 (modbus) by default
	Phase    string `yaml:"phase"`    // phase(s) covered, e.g. L1, L1-L3; "" = all
	Feed     string `yaml:"feed"`     // feed covered, e.g. a, b; "" = all feeds of the domain
	// Timeout overrides the poller's per-meter timeout for this meter.
	Timeout time.Duration `yaml:"timeout"`
	SNMP    *FileSNMP     `yaml:"snmp"`
	Modbus  *FileModbus   `yaml:"modbus"`
}

// FileSNMP is an SNMP meter: a preset of a PDU MIB or explicit OIDs.
type FileSNMP struct {
	Version       string `yaml:"version"` // "2c" (default) or "3"
	CommunityEnv  string `yaml:"community_env"`
	CommunityFile string `yaml:"community_file"`
	User          string `yaml:"user"`
	AuthProtocol  string `yaml:"auth_protocol"` // MD5, SHA, SHA224, SHA256, SHA384, SHA512
	AuthPassEnv   string `yaml:"auth_password_env"`
	AuthPassFile  string `yaml:"auth_password_file"`
	PrivProtocol  string `yaml:"priv_protocol"` // DES, AES, AES192, AES256, AES192C, AES256C
	PrivPassEnv   string `yaml:"priv_password_env"`
	PrivPassFile  string `yaml:"priv_password_file"`
	ContextName   string `yaml:"context_name"`
	// Preset names a PDU MIB's inlet/phase power and energy objects (see
	// SNMPPresets); Index is its table index (e.g. [pdu, inlet]).
	Preset string `yaml:"preset"`
	Index  []int  `yaml:"index"`
	// Or explicit objects; the scale turns the raw value into W (power) or Wh (energy).
	PowerOID    string  `yaml:"power_oid"`
	PowerScale  float64 `yaml:"power_scale"`
	EnergyOID   string  `yaml:"energy_oid"`
	EnergyScale float64 `yaml:"energy_scale"`
}

// FileModbus is a Modbus TCP meter.
type FileModbus struct {
	UnitID *int          `yaml:"unit_id"` // default 1
	Power  *FileRegister `yaml:"power"`
	Energy *FileRegister `yaml:"energy"`
}

// FileRegister is one value of a Modbus meter.
type FileRegister struct {
	Address   *int    `yaml:"address"`    // 0-based register address (protocol address, not 4xxxx)
	Type      string  `yaml:"type"`       // u16 i16 u32 i32 f32 u64 i64 f64
	WordOrder string  `yaml:"word_order"` // big (high word first, default) or little
	ByteOrder string  `yaml:"byte_order"` // big (default, Modbus standard) or little (bytes swapped in each register)
	Function  string  `yaml:"function"`   // holding (default) or input
	Scale     float64 `yaml:"scale"`      // raw × scale = W (power) or Wh (energy); default 1
}

// Meter is a validated facility meter.
type Meter struct {
	Name     string
	Protocol string
	Address  string // host:port
	Phase    string
	Feed     string
	Timeout  time.Duration // 0: the poller's default
	Domain   *Domain
	Key      string // where it is defined, e.g. domains[0].children[0].meters[1]
	Source   string // the topology file
	SNMP     *SNMPMeter
	Modbus   *ModbusMeter
}

// Secret is a credential's env var or file (exactly one), resolved only
// when a poller starts; the value never appears in errors or logs.
type Secret struct {
	Env, File string
	Key       string // e.g. domains[0].meters[0].snmp.community (without _env/_file)
	Source    string
}

// Set reports whether the secret is configured.
func (s Secret) Set() bool { return s.Env != "" || s.File != "" }

// Resolve reads the secret; errors name the file and the key.
func (s Secret) Resolve() (string, error) {
	k := s.Key + "_env"
	if s.File != "" {
		k = s.Key + "_file"
	}
	return config.Secret(fmt.Sprintf("%s: %s", s.Source, k), s.Env, s.File)
}

// SNMPMeter is a resolved SNMP meter definition.
type SNMPMeter struct {
	Version      string // "2c" or "3"
	Community    Secret
	User         string
	AuthProtocol string // "" = noAuth
	AuthPass     Secret
	PrivProtocol string // "" = noPriv
	PrivPass     Secret
	ContextName  string
	Preset       string
	Power        SNMPObject
	Energy       *SNMPObject
}

// SNMPObject is one OID and its scale to W or Wh.
type SNMPObject struct {
	OID   string // numeric, leading dot
	Scale float64
}

// ModbusMeter is a resolved Modbus meter definition.
type ModbusMeter struct {
	UnitID uint8
	Power  Register
	Energy *Register
}

// Register is one Modbus value.
type Register struct {
	Address   uint16
	Type      string
	WordOrder string // "big" or "little"
	ByteOrder string // "big" or "little"
	Function  string // "holding" or "input"
	Scale     float64
}

// Words is the number of 16-bit registers the type spans.
func (r Register) Words() uint16 { return RegisterWords(r.Type) }

// RegisterWords is the register count of a Modbus value type (0: unknown type).
func RegisterWords(typ string) uint16 {
	switch typ {
	case "u16", "i16":
		return 1
	case "u32", "i32", "f32":
		return 2
	case "u64", "i64", "f64":
		return 4
	}
	return 0
}

var (
	authProtocols = []string{"MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"}
	privProtocols = []string{"DES", "AES", "AES192", "AES256", "AES192C", "AES256C"}
)

// Meters are all meters in tree order.
func (t *Topology) Meters() []*Meter { return t.meters }

// Meter finds a meter by name.
func (t *Topology) Meter(name string) (*Meter, bool) {
	m, ok := t.meterByName[name]
	return m, ok
}

type meterSpec struct {
	snmp   *SNMPMeter
	modbus *ModbusMeter
	ok     bool
}

// meters validates and builds the meters of domain d. A range of domains
// (rk[01-40]) shares one definition: it is checked once, at the first
// domain; only names and addresses differ from domain to domain.
func (b *builder) meters(d *Domain, list []FileMeter, key string, names map[string]string) {
	for i, fm := range list {
		k := fmt.Sprintf("%s[%d]", key, i)
		spec, seen := b.meterSpecs[k]
		if !seen {
			nerr := len(b.errs)
			spec.snmp, spec.modbus = b.meterSpec(fm, k)
			spec.ok = len(b.errs) == nerr
			b.meterSpecs[k] = spec
		}
		nerr := len(b.errs)
		m := &Meter{Protocol: fm.Protocol, Phase: fm.Phase, Feed: fm.Feed, Timeout: fm.Timeout, Domain: d, Key: k,
			Source: b.t.source, SNMP: spec.snmp, Modbus: spec.modbus}
		name, err := substitute(fm.Name, names)
		if err != nil {
			b.errf(k+".name", "%v", err)
		} else if err := telemetry.ValidateToken(name); err != nil {
			b.errf(k+".name", "meter %v", err)
		} else if prev, dup := b.meterWhere[name]; dup {
			b.errf(k+".name", "meter %q is also defined at %s", name, prev)
		}
		m.Name = name
		def := 161
		if fm.Protocol == ProtocolModbus {
			def = 502
		}
		if addr, err := substitute(fm.Address, names); err != nil {
			b.errf(k+".address", "%v", err)
		} else if m.Address, err = hostPort(addr, def); err != nil {
			b.errf(k+".address", "%v", err)
		}
		if !spec.ok || len(b.errs) > nerr {
			continue
		}
		b.meterWhere[name] = k
		d.Meters = append(d.Meters, m)
		b.t.meters = append(b.t.meters, m)
		b.t.meterByName[name] = m
	}
}

// meterSpec checks what does not depend on the domain: protocol, address
// presence, objects, registers, credentials.
func (b *builder) meterSpec(fm FileMeter, k string) (snmp *SNMPMeter, modbus *ModbusMeter) {
	if fm.Name == "" {
		b.errf(k+".name", "required")
	}
	if fm.Address == "" {
		b.errf(k+".address", "required (host or host:port)")
	}
	if err := checkLabel(fm.Phase); err != nil {
		b.errf(k+".phase", "%v", err)
	}
	if err := checkLabel(fm.Feed); err != nil {
		b.errf(k+".feed", "%v", err)
	}
	if fm.Timeout < 0 || fm.Timeout > time.Minute {
		b.errf(k+".timeout", "must be between 0 (the poller's default) and 1m, got %v", fm.Timeout)
	}
	switch fm.Protocol {
	case ProtocolSNMP:
		if fm.Modbus != nil {
			b.errf(k+".modbus", "set on an snmp meter")
		}
		if fm.SNMP == nil {
			b.errf(k+".snmp", "required for protocol snmp")
			return nil, nil
		}
		snmp = b.snmpSpec(*fm.SNMP, k+".snmp")
	case ProtocolModbus:
		if fm.SNMP != nil {
			b.errf(k+".snmp", "set on a modbus meter")
		}
		if fm.Modbus == nil {
			b.errf(k+".modbus", "required for protocol modbus")
			return nil, nil
		}
		modbus = b.modbusSpec(*fm.Modbus, k+".modbus")
	case "":
		b.errf(k+".protocol", "required: snmp or modbus")
	default:
		b.errf(k+".protocol", "must be snmp or modbus, got %q", fm.Protocol)
	}
	return snmp, modbus
}

func (b *builder) secret(k, env, file string, required bool) Secret {
	s := Secret{Env: env, File: file, Key: k, Source: b.t.source}
	switch {
	case env != "" && file != "":
		b.errf(k+"_env", "set only one of %s_env and %s_file", lastKey(k), lastKey(k))
	case required && !s.Set():
		b.errf(k+"_env", "required: the env var (or %s_file: the file) holding it; credentials never go in the topology file", lastKey(k))
	}
	if env != "" {
		if err := checkEnvName(env); err != nil {
			b.errf(k+"_env", "%v", err)
		}
	}
	return s
}

func lastKey(k string) string { return k[strings.LastIndexByte(k, '.')+1:] }

func (b *builder) snmpSpec(f FileSNMP, k string) *SNMPMeter {
	s := &SNMPMeter{Version: f.Version, User: f.User, ContextName: f.ContextName, Preset: f.Preset}
	if s.Version == "" {
		s.Version = "2c"
	}
	switch s.Version {
	case "2c":
		s.Community = b.secret(k+".community", f.CommunityEnv, f.CommunityFile, true)
		for key, set := range map[string]bool{"user": f.User != "", "auth_protocol": f.AuthProtocol != "", "priv_protocol": f.PrivProtocol != "",
			"auth_password_env": f.AuthPassEnv != "" || f.AuthPassFile != "", "priv_password_env": f.PrivPassEnv != "" || f.PrivPassFile != ""} {
			if set {
				b.errf(k+"."+key, "is for SNMP v3; this meter is version 2c")
			}
		}
	case "3":
		if f.CommunityEnv != "" || f.CommunityFile != "" {
			b.errf(k+".community_env", "is for SNMP v2c; this meter is version 3")
		}
		if f.User == "" {
			b.errf(k+".user", "required for SNMP v3")
		}
		if f.AuthProtocol != "" {
			if !slices.Contains(authProtocols, strings.ToUpper(f.AuthProtocol)) {
				b.errf(k+".auth_protocol", "must be one of %s, got %q", strings.Join(authProtocols, ", "), f.AuthProtocol)
			}
			s.AuthProtocol = strings.ToUpper(f.AuthProtocol)
			s.AuthPass = b.secret(k+".auth_password", f.AuthPassEnv, f.AuthPassFile, true)
		} else if f.AuthPassEnv != "" || f.AuthPassFile != "" {
			b.errf(k+".auth_protocol", "required when an auth password is set")
		}
		if f.PrivProtocol != "" {
			if !slices.Contains(privProtocols, strings.ToUpper(f.PrivProtocol)) {
				b.errf(k+".priv_protocol", "must be one of %s, got %q", strings.Join(privProtocols, ", "), f.PrivProtocol)
			}
			if f.AuthProtocol == "" {
				b.errf(k+".priv_protocol", "privacy needs authentication (auth_protocol)")
			}
			s.PrivProtocol = strings.ToUpper(f.PrivProtocol)
			s.PrivPass = b.secret(k+".priv_password", f.PrivPassEnv, f.PrivPassFile, true)
		} else if f.PrivPassEnv != "" || f.PrivPassFile != "" {
			b.errf(k+".priv_protocol", "required when a privacy password is set")
		}
	default:
		b.errf(k+".version", "must be 2c or 3, got %q", f.Version)
	}
	if f.Preset != "" {
		p, ok := snmpPresets[f.Preset]
		if !ok {
			b.errf(k+".preset", "unknown preset %q (one of %s)", f.Preset, strings.Join(sortedPresetNames(), ", "))
			return s
		}
		if f.PowerOID != "" || f.EnergyOID != "" {
			b.errf(k+".power_oid", "set either preset or power_oid/energy_oid")
		}
		idx := f.Index
		if len(idx) == 0 {
			idx = slices.Repeat([]int{1}, len(p.Index))
		}
		if len(idx) != len(p.Index) {
			b.errf(k+".index", "preset %s takes %d index numbers (%s), got %d", f.Preset, len(p.Index), strings.Join(p.Index, ", "), len(idx))
			return s
		}
		parts := make([]string, len(idx))
		for i, n := range idx {
			if n < 0 || n > 1<<31-1 {
				b.errf(fmt.Sprintf("%s.index[%d]", k, i), "must be 0..2147483647, got %d", n)
			}
			parts[i] = strconv.Itoa(n)
		}
		suffix := strings.Join(parts, ".")
		s.Power = SNMPObject{OID: fmt.Sprintf(p.PowerOID, suffix), Scale: p.PowerScale}
		if p.EnergyOID != "" {
			s.Energy = &SNMPObject{OID: fmt.Sprintf(p.EnergyOID, suffix), Scale: p.EnergyScale}
		}
		if f.PowerScale != 0 || f.EnergyScale != 0 {
			b.errf(k+".power_scale", "a preset fixes the scales; use power_oid/energy_oid to set your own")
		}
		return s
	}
	if len(f.Index) > 0 {
		b.errf(k+".index", "only with a preset")
	}
	if f.PowerOID == "" {
		b.errf(k+".power_oid", "required (or a preset: %s)", strings.Join(sortedPresetNames(), ", "))
	} else if oid, err := checkOID(f.PowerOID); err != nil {
		b.errf(k+".power_oid", "%v", err)
	} else {
		s.Power = SNMPObject{OID: oid, Scale: b.scale(k+".power_scale", f.PowerScale)}
	}
	if f.EnergyOID != "" {
		if oid, err := checkOID(f.EnergyOID); err != nil {
			b.errf(k+".energy_oid", "%v", err)
		} else {
			s.Energy = &SNMPObject{OID: oid, Scale: b.scale(k+".energy_scale", f.EnergyScale)}
		}
	} else if f.EnergyScale != 0 {
		b.errf(k+".energy_scale", "set without energy_oid")
	}
	return s
}

func (b *builder) scale(k string, v float64) float64 {
	switch {
	case v == 0:
		return 1
	case v < 0 || v != v || v > 1e12:
		b.errf(k, "must be positive (raw value × scale = W or Wh), got %v", v)
	}
	return v
}

func (b *builder) modbusSpec(f FileModbus, k string) *ModbusMeter {
	m := &ModbusMeter{UnitID: 1}
	if f.UnitID != nil {
		if *f.UnitID < 0 || *f.UnitID > 255 {
			b.errf(k+".unit_id", "must be 0..255, got %d", *f.UnitID)
		} else {
			m.UnitID = uint8(*f.UnitID)
		}
	}
	if f.Power == nil {
		b.errf(k+".power", "required: the register holding active power")
	} else {
		m.Power = b.register(*f.Power, k+".power")
	}
	if f.Energy != nil {
		r := b.register(*f.Energy, k+".energy")
		m.Energy = &r
	}
	return m
}

func (b *builder) register(f FileRegister, k string) Register {
	r := Register{Type: f.Type, WordOrder: f.WordOrder, ByteOrder: f.ByteOrder, Function: f.Function, Scale: b.scale(k+".scale", f.Scale)}
	if r.WordOrder == "" {
		r.WordOrder = "big"
	}
	if r.ByteOrder == "" {
		r.ByteOrder = "big"
	}
	if r.Function == "" {
		r.Function = "holding"
	}
	if r.Type == "" {
		b.errf(k+".type", "required: u16, i16, u32, i32, f32, u64, i64 or f64")
	} else if RegisterWords(r.Type) == 0 {
		b.errf(k+".type", "must be u16, i16, u32, i32, f32, u64, i64 or f64, got %q", r.Type)
	}
	if r.WordOrder != "big" && r.WordOrder != "little" {
		b.errf(k+".word_order", "must be big or little, got %q", r.WordOrder)
	}
	if r.ByteOrder != "big" && r.ByteOrder != "little" {
		b.errf(k+".byte_order", "must be big or little, got %q", r.ByteOrder)
	}
	if r.Function != "holding" && r.Function != "input" {
		b.errf(k+".function", "must be holding or input, got %q", r.Function)
	}
	switch {
	case f.Address == nil:
		b.errf(k+".address", "required: the 0-based register address")
	case *f.Address < 0 || *f.Address+int(max(RegisterWords(r.Type), 1)) > 65536:
		b.errf(k+".address", "must be 0..65535 with the whole value inside the register space, got %d", *f.Address)
	default:
		r.Address = uint16(*f.Address)
	}
	return r
}

// checkOID accepts numeric OIDs (".1.3.6..." or "1.3.6...") and returns
// them with a leading dot.
func checkOID(s string) (string, error) {
	t := strings.TrimPrefix(s, ".")
	parts := strings.Split(t, ".")
	if len(parts) < 2 || len(parts) > 128 {
		return "", fmt.Errorf("OID %q: want a numeric OID such as .1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.5", s)
	}
	for _, p := range parts {
		if _, err := strconv.ParseUint(p, 10, 32); err != nil {
			return "", fmt.Errorf("OID %q: %q is not a number (names from MIBs are not resolved; give the numeric OID)", s, p)
		}
	}
	return "." + t, nil
}

func checkLabel(s string) error {
	if len(s) > 32 {
		return fmt.Errorf("at most 32 characters, got %d", len(s))
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f {
			return fmt.Errorf("%q: printable ASCII without spaces only", s)
		}
	}
	return nil
}

func checkEnvName(s string) error {
	for i, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return fmt.Errorf("%q is not an environment variable name", s)
		}
	}
	return nil
}

func hostPort(addr string, def int) (string, error) {
	if strings.ContainsAny(addr, " /\t\n") || addr == "" {
		return "", fmt.Errorf("%q: want host or host:port", addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		if strings.Count(addr, ":") > 1 && !strings.HasPrefix(addr, "[") { // bare IPv6
			return net.JoinHostPort(addr, strconv.Itoa(def)), nil
		}
		if strings.Contains(addr, ":") {
			return "", fmt.Errorf("%q: %v", addr, err)
		}
		return net.JoinHostPort(addr, strconv.Itoa(def)), nil
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || host == "" {
		return "", fmt.Errorf("%q: want host:port with a port 1..65535", addr)
	}
	return addr, nil
}
