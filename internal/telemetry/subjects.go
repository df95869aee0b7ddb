package telemetry

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Subject roots and stream names. See shared/DESIGN.md.
const (
	Prefix             = "megawatch.v1"
	PowerPrefix        = Prefix + ".power"
	RollupPrefix       = Prefix + ".rollup"
	AlertPrefix        = Prefix + ".alert"
	DeadLetterPrefix   = Prefix + ".deadletter"
	PowerWildcard      = PowerPrefix + ".>"
	RollupWildcard     = RollupPrefix + ".>"
	AlertWildcard      = AlertPrefix + ".>"
	DeadLetterWildcard = DeadLetterPrefix + ".>"

	StreamPower      = "MEGAWATCH_POWER"
	StreamRollup     = "MEGAWATCH_ROLLUP"
	StreamDeadLetter = "MEGAWATCH_DEADLETTER"

	// Message headers.
	HeaderMsgID      = "Nats-Msg-Id"
	HeaderSchema     = "Megawatch-Schema"
	SchemaVersion    = "1"
	HeaderDeadReason = "Megawatch-Deadletter-Reason"
	HeaderDeadError  = "Megawatch-Deadletter-Error"
	HeaderDeadFrom   = "Megawatch-Deadletter-Subject"
)

// ErrBadToken is wrapped by every token validation error.
var ErrBadToken = errors.New("invalid subject token")

// ValidateToken reports whether s can be one token of a NATS subject:
// non-empty, no '.', '*', '>' and no whitespace or control characters.
func ValidateToken(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty", ErrBadToken)
	}
	if plainASCIIToken(s) { // the common case, checked on every report ingested
		return nil
	}
	for i, r := range s {
		switch {
		case r == '.' || r == '*' || r == '>':
			return fmt.Errorf("%w %q: %q at byte %d is not allowed", ErrBadToken, s, r, i)
		case unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar:
			return fmt.Errorf("%w %q: whitespace or control character at byte %d", ErrBadToken, s, i)
		}
	}
	return nil
}

// plainASCIIToken reports whether s is printable ASCII without '.', '*' or
// '>' (a valid token; anything else takes ValidateToken's rune loop).
func plainASCIIToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '.' || c == '*' || c == '>' {
			return false
		}
	}
	return true
}

// Location is where a node sits in the canonical power hierarchy.
type Location struct {
	Site, Hall, Row, Rack, Node string
}

func (l Location) tokens() [5]string { return [5]string{l.Site, l.Hall, l.Row, l.Rack, l.Node} }

var locationKeys = [5]string{"site", "hall", "row", "rack", "node"}

// Validate checks every token and names the bad ones.
func (l Location) Validate() error {
	var errs []error
	for i, t := range l.tokens() {
		if err := ValidateToken(t); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", locationKeys[i], err))
		}
	}
	return errors.Join(errs...)
}

// String is the location as a path, site/hall/row/rack/node.
func (l Location) String() string {
	t := l.tokens()
	return strings.Join(t[:], "/")
}

// PowerSubject is megawatch.v1.power.<site>.<hall>.<row>.<rack>.<node>.
func PowerSubject(l Location) (string, error) {
	if err := l.Validate(); err != nil {
		return "", err
	}
	t := l.tokens()
	return PowerPrefix + "." + strings.Join(t[:], "."), nil
}

// ParsePowerSubject is the inverse of PowerSubject.
func ParsePowerSubject(subject string) (Location, error) {
	rest, ok := strings.CutPrefix(subject, PowerPrefix+".")
	if !ok {
		return Location{}, fmt.Errorf("subject %q: not under %s", subject, PowerPrefix)
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 5 {
		return Location{}, fmt.Errorf("subject %q: want 5 tokens site.hall.row.rack.node after %s, got %d", subject, PowerPrefix, len(parts))
	}
	l := Location{Site: parts[0], Hall: parts[1], Row: parts[2], Rack: parts[3], Node: parts[4]}
	if err := l.Validate(); err != nil {
		return Location{}, fmt.Errorf("subject %q: %w", subject, err)
	}
	return l, nil
}

// ReportLocation is where a report says it comes from.
func ReportLocation(r *NodeReport) Location {
	return Location{Site: r.GetSite(), Hall: r.GetHall(), Row: r.GetRow(), Rack: r.GetRack(), Node: r.GetNode()}
}

// RollupSubject is megawatch.v1.rollup.<level>.<path...>.
func RollupSubject(level string, path []string) (string, error) {
	if err := ValidateToken(level); err != nil {
		return "", fmt.Errorf("level: %w", err)
	}
	if len(path) == 0 {
		return "", fmt.Errorf("rollup path: empty")
	}
	var b strings.Builder
	b.WriteString(RollupPrefix)
	b.WriteByte('.')
	b.WriteString(level)
	for i, p := range path {
		if err := ValidateToken(p); err != nil {
			return "", fmt.Errorf("rollup path[%d]: %w", i, err)
		}
		b.WriteByte('.')
		b.WriteString(p)
	}
	return b.String(), nil
}

// ParseRollupSubject returns the level and path of a rollup subject.
func ParseRollupSubject(subject string) (level string, path []string, err error) {
	rest, ok := strings.CutPrefix(subject, RollupPrefix+".")
	if !ok {
		return "", nil, fmt.Errorf("subject %q: not under %s", subject, RollupPrefix)
	}
	parts := strings.Split(rest, ".")
	if len(parts) < 2 {
		return "", nil, fmt.Errorf("subject %q: want <level>.<path...> after %s", subject, RollupPrefix)
	}
	for i, p := range parts {
		if err := ValidateToken(p); err != nil {
			return "", nil, fmt.Errorf("subject %q: token %d: %w", subject, i, err)
		}
	}
	return parts[0], parts[1:], nil
}

// AlertSubject is megawatch.v1.alert.<severity>.<rule>.
func AlertSubject(severity, rule string) (string, error) {
	if err := ValidateToken(severity); err != nil {
		return "", fmt.Errorf("severity: %w", err)
	}
	if err := ValidateToken(rule); err != nil {
		return "", fmt.Errorf("rule: %w", err)
	}
	return AlertPrefix + "." + severity + "." + rule, nil
}

// DeadLetterSubject is megawatch.v1.deadletter.<reason>.
func DeadLetterSubject(reason string) (string, error) {
	if err := ValidateToken(reason); err != nil {
		return "", fmt.Errorf("reason: %w", err)
	}
	return DeadLetterPrefix + "." + reason, nil
}

// MsgID is the JetStream dedup id of a node's window: <node>:<window_end_unix_ms>.
func MsgID(node string, windowEndUnixNs int64) string {
	return fmt.Sprintf("%s:%d", node, windowEndUnixNs/1e6)
}
