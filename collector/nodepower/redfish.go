package nodepower

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/megawatch/megawatch/internal/config"
	"github.com/megawatch/megawatch/internal/telemetry"
)

const (
	maxBody       = 1 << 20 // a Redfish resource bigger than this is not one we read
	maxRetryAfter = 10 * time.Minute
)

// Redfish reads the chassis power of a BMC. It finds the node's chassis
// under /redfish/v1/Chassis (the configured Id, else the first that is not
// contained in another and links to its power) and where its power is (EnvironmentMetrics
// PowerWatts, else the Sensors collection's TotalPower, else the legacy
// Power resource's PowerControl[].PowerConsumedWatts), and the energy
// counter when the BMC has one; after that a read is one GET (two with a
// separate energy sensor). When the layout changes (a 404 or a resource
// without its reading) it looks again. One connection to the BMC, reused.
type Redfish struct {
	base    *url.URL
	chassis string
	user    string
	pass    string
	hc      *http.Client
	plan    *redfishPlan
}

type planKind int

const (
	planEnvironment planKind = iota // EnvironmentMetrics.PowerWatts
	planSensor                      // Sensors/TotalPower
	planLegacy                      // Power.PowerControl[].PowerConsumedWatts
)

var planNames = [...]string{"EnvironmentMetrics", "Sensors", "Power"}

// redfishPlan is where the power and the energy counter are read.
type redfishPlan struct {
	kind   planKind
	power  string // path of the power resource
	energy string // path of a separate energy Sensor; "" = none or inline
}

// NewRedfish builds the client of cfg: the password from its env var or
// file, TLS from ca_file or the explicit insecure flag.
func NewRedfish(cfg RedfishConfig) (*Redfish, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("node_power.redfish.url: want https://host[:port]")
	}
	u.Path, u.RawQuery, u.Fragment = "", "", ""
	r := &Redfish{base: u, chassis: cfg.Chassis, user: cfg.User}
	if cfg.PasswordEnv != "" || cfg.PasswordFile != "" {
		if r.pass, err = config.Secret("node_power.redfish password", cfg.PasswordEnv, cfg.PasswordFile); err != nil {
			return nil, err
		}
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case cfg.CAFile != "":
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("node_power.redfish.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("node_power.redfish.ca_file: no PEM certificate in %s", cfg.CAFile)
		}
		tc.RootCAs = pool
	case cfg.InsecureSkipVerify:
		tc.InsecureSkipVerify = true // the operator asked for it explicitly
	}
	tr := &http.Transport{
		// One connection: BMCs allow few clients, and polls never overlap.
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		MaxIdleConns:        1,
		IdleConnTimeout:     2 * time.Minute,
		TLSHandshakeTimeout: 10 * time.Second,
		TLSClientConfig:     tc,
	}
	r.hc = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // a redirect elsewhere would carry the credentials
	}}
	return r, nil
}

func (r *Redfish) Name() string { return SourceRedfish }
func (r *Redfish) Kind() telemetry.NodePowerSource {
	return telemetry.NodePowerSource_NODE_POWER_REDFISH
}

// Close drops the idle connection.
func (r *Redfish) Close() { r.hc.CloseIdleConnections() }

// Layout says where the power is read from ("" before the first read).
func (r *Redfish) Layout() string {
	if r.plan == nil {
		return ""
	}
	return planNames[r.plan.kind] + " " + r.plan.power
}

// errLayout: the resource the plan reads is gone or has no reading.
var errLayout = errors.New("redfish resource layout changed")

// Read returns the chassis power and, when the BMC has one, its energy.
func (r *Redfish) Read(ctx context.Context) (Sample, error) {
	if r.plan == nil {
		p, err := r.discover(ctx)
		if err != nil {
			return Sample{}, err
		}
		r.plan = p
	}
	s, err := r.readPlan(ctx, r.plan)
	if errors.Is(err, errLayout) {
		r.plan = nil
		p, derr := r.discover(ctx)
		if derr != nil {
			return Sample{}, fmt.Errorf("%w; looking again: %w", err, derr)
		}
		r.plan = p
		return r.readPlan(ctx, p)
	}
	return s, err
}

func (r *Redfish) readPlan(ctx context.Context, p *redfishPlan) (Sample, error) {
	b, err := r.get(ctx, p.power)
	if errors.Is(err, errNotFound) {
		return Sample{}, fmt.Errorf("%w: %w", errLayout, err)
	}
	if err != nil {
		return Sample{}, err
	}
	var s Sample
	switch p.kind {
	case planEnvironment:
		s, err = DecodeEnvironmentMetrics(b)
	case planSensor:
		var sr SensorReading
		if sr, err = DecodeSensor(b); err == nil {
			s.PowerW, err = sr.PowerW()
		}
	case planLegacy:
		s, err = DecodePower(b)
	}
	if errors.Is(err, errNoReading) {
		return Sample{}, fmt.Errorf("%w: %s: %w", errLayout, p.power, err)
	}
	if err != nil {
		return Sample{}, err
	}
	if p.energy != "" && !s.HasEnergy {
		if eb, err := r.get(ctx, p.energy); err == nil {
			if sr, err := DecodeSensor(eb); err == nil {
				s.EnergyMJ, s.HasEnergy = sr.EnergyMJ()
			}
		} else if errors.Is(err, errNotFound) {
			p.energy = "" // gone: power alone from now on
		}
	}
	return s, nil
}

// discover finds the chassis and where its power and energy are.
func (r *Redfish) discover(ctx context.Context) (*redfishPlan, error) {
	chassis, links, err := r.findChassis(ctx)
	if err != nil {
		return nil, err
	}
	var sensors []string
	if links.Sensors != "" {
		if sb, err := r.get(ctx, links.Sensors); err == nil {
			sensors, _ = DecodeCollection(sb)
		} else if !errors.Is(err, errNotFound) {
			return nil, err
		}
	}
	energy := memberNamed(sensors, "TotalEnergy")
	if links.EnvironmentMetrics != "" {
		eb, err := r.get(ctx, links.EnvironmentMetrics)
		switch {
		case err == nil:
			if s, err := DecodeEnvironmentMetrics(eb); err == nil {
				p := &redfishPlan{kind: planEnvironment, power: links.EnvironmentMetrics}
				if !s.HasEnergy {
					p.energy = energy
				}
				return p, nil
			}
		case !errors.Is(err, errNotFound):
			return nil, err
		}
	}
	if tp := memberNamed(sensors, "TotalPower"); tp != "" {
		return &redfishPlan{kind: planSensor, power: tp, energy: energy}, nil
	}
	if links.Power != "" {
		return &redfishPlan{kind: planLegacy, power: links.Power, energy: energy}, nil
	}
	return nil, fmt.Errorf("redfish: chassis %s has no EnvironmentMetrics, Sensors/TotalPower or Power", chassis)
}

// maxChassis bounds how many chassis discovery looks at.
const maxChassis = 32

// findChassis returns the configured chassis, or else the node's own: the
// first member of /redfish/v1/Chassis that is not inside another chassis
// (GPU baseboards, drive backplanes and the like are) and has its power,
// else the first member with its power.
func (r *Redfish) findChassis(ctx context.Context) (string, ChassisLinks, error) {
	if r.chassis != "" {
		p := "/redfish/v1/Chassis/" + url.PathEscape(r.chassis)
		b, err := r.get(ctx, p)
		if err != nil {
			return "", ChassisLinks{}, err
		}
		l, err := DecodeChassis(b)
		return p, l, err
	}
	b, err := r.get(ctx, "/redfish/v1/Chassis")
	if err != nil {
		return "", ChassisLinks{}, err
	}
	members, err := DecodeCollection(b)
	if err != nil {
		return "", ChassisLinks{}, err
	}
	var fallback string
	var fallbackLinks ChassisLinks
	for i, m := range members {
		if i == maxChassis {
			break
		}
		b, err := r.get(ctx, m)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return "", ChassisLinks{}, err
		}
		l, err := DecodeChassis(b)
		if err != nil || !l.hasPower() {
			continue
		}
		if !l.Contained {
			return m, l, nil
		}
		if fallback == "" {
			fallback, fallbackLinks = m, l
		}
	}
	if fallback == "" {
		return "", ChassisLinks{}, errors.New("redfish: no chassis under /redfish/v1/Chassis links to its power")
	}
	return fallback, fallbackLinks, nil
}

// HTTPError is a BMC's answer other than 200.
type HTTPError struct {
	Status int
	Path   string
}

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("redfish GET %s: HTTP %d", e.Path, e.Status)
	if e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden {
		msg += " (check node_power.redfish.user and its password)"
	}
	return msg
}

func (e *HTTPError) Is(target error) bool {
	return target == errNotFound && e.Status == http.StatusNotFound
}

var errNotFound = errors.New("not found")

// get fetches one resource. Only paths under /redfish/ of the configured
// BMC are followed: an @odata.id pointing elsewhere is refused, so the
// credentials never leave for another host.
func (r *Redfish) get(ctx context.Context, ref string) ([]byte, error) {
	ru, err := url.Parse(ref)
	if err != nil || !strings.HasPrefix(ru.Path, "/redfish/") || (ru.Host != "" && ru.Host != r.base.Host) {
		return nil, fmt.Errorf("redfish: refusing link %q", truncate(ref, 64))
	}
	u := *r.base
	u.Path = ru.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("OData-Version", "4.0")
	if r.user != "" {
		req.SetBasicAuth(r.user, r.pass)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("redfish GET %s: %w", ru.Path, unwrapURLError(err))
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		return nil, &RetryAfterError{Status: resp.StatusCode, After: ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	default:
		return nil, &HTTPError{Status: resp.StatusCode, Path: ru.Path}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("redfish GET %s: %w", ru.Path, err)
	}
	if len(b) > maxBody {
		return nil, fmt.Errorf("redfish GET %s: body over %d bytes", ru.Path, maxBody)
	}
	return b, nil
}

// unwrapURLError keeps the cause of a *url.Error (its URL carries no
// credentials, but the cause is what matters) and deadline errors
// recognisable.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// ParseRetryAfter decodes a Retry-After header (seconds or an HTTP date),
// capped at 10 minutes; 0 when absent or invalid.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return min(time.Duration(n)*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d, maxRetryAfter)
		}
	}
	return 0
}
