package testenv

import (
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

//go:embed testdata/snmp_pass.py
var snmpPassPy []byte

// SNMPv3User is the USM user that StartSNMPD creates (authPriv).
type SNMPv3User struct {
	Name string
	// AuthProtocol and PrivProtocol in net-snmp's spelling (createUser, snmpget -a/-x).
	AuthProtocol, AuthPass string
	PrivProtocol, PrivPass string
}

// SNMPD is a real net-snmp agent (Debian's snmpd 5.9) on 127.0.0.1, with a
// pass_persist script serving the OIDs under .1.3.6.1.4.1 (enterprises) that
// the test sets. It answers SNMP v2c with Community and SNMP v3 with V3.
type SNMPD struct {
	*Proc
	Addr      string // 127.0.0.1:<port>
	Port      int
	Community string
	V3        SNMPv3User

	t      testing.TB
	dir    string
	path   string
	mu     sync.Mutex
	values map[string][2]any
}

func randomSecret(t testing.TB) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// freeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free udp port: %v", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// snmpVars keep net-snmp away from MIB files (the agent loads none: we
// serve numeric OIDs) and from /var/lib/snmp (tests may run without root).
func snmpVars(dir string) []string {
	return []string{"MIBS=", "MIBDIRS=" + filepath.Join(dir, "no-mibs"), "SNMP_PERSISTENT_DIR=" + filepath.Join(dir, "persist"), "SNMPCONFPATH=" + dir}
}

func snmpEnv(dir string) []string { return append(os.Environ(), snmpVars(dir)...) }

// StartSNMPD starts snmpd with a fresh community and v3 user (SHA-256/AES).
// A missing snmpd skips the test, or fails it under CI=true.
func StartSNMPD(t testing.TB) *SNMPD {
	t.Helper()
	Short(t)
	bin := "/usr/sbin/snmpd"
	if _, err := os.Stat(bin); err != nil {
		p, lerr := exec.LookPath("snmpd")
		if lerr != nil {
			missing(t, "snmpd", fmt.Errorf("not in /usr/sbin or PATH"))
		}
		bin = p
	}
	py, err := exec.LookPath("python3")
	if _, serr := os.Stat("/usr/bin/python3"); serr == nil {
		py, err = "/usr/bin/python3", nil
	}
	if err != nil {
		missing(t, "python3 for the snmpd pass_persist script", err)
	}
	dir := t.TempDir()
	s := &SNMPD{t: t, dir: dir, path: filepath.Join(dir, "values.json"), values: map[string][2]any{},
		Community: "c-" + randomSecret(t),
		V3:        SNMPv3User{Name: "megawatch", AuthProtocol: "SHA-256", AuthPass: "a-" + randomSecret(t), PrivProtocol: "AES", PrivPass: "p-" + randomSecret(t)}}
	script := filepath.Join(dir, "snmp_pass.py")
	writeFile(t, script, string(snmpPassPy))
	s.write()
	s.Port = freeUDPPort(t)
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	conf := fmt.Sprintf(`agentAddress udp:%s
rocommunity %s 127.0.0.1
createUser %s %s "%s" %s "%s"
rouser %s priv
dontLogTCPWrappersConnects yes
pass_persist .1.3.6.1.4.1 %s %s %s
`, s.Addr, s.Community, s.V3.Name, s.V3.AuthProtocol, s.V3.AuthPass, s.V3.PrivProtocol, s.V3.PrivPass, s.V3.Name, py, script, s.path)
	cf := filepath.Join(dir, "snmpd.conf")
	writeFile(t, cf, conf)
	if err := os.MkdirAll(filepath.Join(dir, "persist"), 0o700); err != nil {
		t.Fatal(err)
	}
	// -f foreground, -Lo log to stdout, -C only our config, -I -smux: no
	// SMUX listener on TCP 199 (shared by every agent on the host).
	// (through env(1): Proc inherits this process's environment.)
	args := append(snmpVars(dir), bin, "-f", "-Lo", "-C", "-c", cf, "-I", "-smux")
	s.Proc = StartProc(t, "snmpd", "/usr/bin/env", args...)
	s.WaitReady()
	return s
}

// WaitReady waits until the agent answers (after Start too).
func (s *SNMPD) WaitReady() {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if !s.Running() {
			s.t.Fatalf("snmpd exited:\n%s", s.Output())
		}
		if last = s.probe(); last == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("snmpd on %s not answering after 60s: %v\n%s", s.Addr, last, s.Output())
}

// probe sends one v2c get of sysUpTime.0 over a raw UDP socket.
func (s *SNMPD) probe() error {
	c, err := net.Dial("udp", s.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write(sysUpTimeGet(s.Community)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 1500)
	_, err = c.Read(buf)
	return err
}

// sysUpTimeGet is a BER-encoded SNMP v2c GetRequest for .1.3.6.1.2.1.1.3.0.
func sysUpTimeGet(community string) []byte {
	varbind := []byte{0x30, 0x0c, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x02, 0x01, 0x01, 0x03, 0x00, 0x05, 0x00}
	vbl := append([]byte{0x30, byte(len(varbind))}, varbind...)
	pdu := append([]byte{0x02, 0x01, 0x01, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00}, vbl...)
	pdu = append([]byte{0xa0, byte(len(pdu))}, pdu...)
	msg := append([]byte{0x02, 0x01, 0x01, 0x04, byte(len(community))}, community...)
	msg = append(msg, pdu...)
	return append([]byte{0x30, byte(len(msg))}, msg...)
}

// Restart starts the agent again on the same port with the same values.
func (s *SNMPD) Restart() {
	s.t.Helper()
	if err := s.Start(); err != nil {
		s.t.Fatalf("restart snmpd: %v", err)
	}
	s.WaitReady()
}

// Set serves oid with a net-snmp pass type (integer, gauge, counter,
// timeticks, string, ...) and value.
func (s *SNMPD) Set(oid, typ string, value any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !strings.HasPrefix(oid, ".") {
		oid = "." + oid
	}
	s.values[oid] = [2]any{typ, value}
	s.write()
}

// Unset stops serving oid.
func (s *SNMPD) Unset(oid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.values, oid)
	s.write()
}

func (s *SNMPD) write() {
	b, err := json.Marshal(s.values)
	if err != nil {
		s.t.Fatal(err)
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		s.t.Fatal(err)
	}
}

// SNMPGetBinary finds Debian's snmpget (package snmp), or skips the test
// (fails it under CI=true).
func SNMPGetBinary(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("snmpget")
	if err != nil {
		missing(t, "snmpget", err)
	}
	return p
}

// SNMPGet runs Debian's snmpget against the agent with extra args (e.g.
// "-v2c", "-c", community) and returns the value it printed (-Oqv).
func (s *SNMPD) SNMPGet(args ...string) (string, error) {
	bin := SNMPGetBinary(s.t)
	full := append([]string{"-On", "-Oqv", "-t", "2", "-r", "1"}, args...)
	cmd := exec.Command(bin, full...)
	cli := filepath.Join(s.dir, "cli")
	_ = os.MkdirAll(filepath.Join(cli, "persist"), 0o700)
	cmd.Env = snmpEnv(cli)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("snmpget: %w: %s%s", err, out, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// V2Args are snmpget's arguments for v2c with the agent's community, then oids.
func (s *SNMPD) V2Args(oids ...string) []string {
	return append([]string{"-v2c", "-c", s.Community, s.Addr}, oids...)
}

// V3Args are snmpget's arguments for v3 authPriv with the agent's user, then oids.
func (s *SNMPD) V3Args(oids ...string) []string {
	return append([]string{"-v3", "-l", "authPriv", "-u", s.V3.Name, "-a", s.V3.AuthProtocol, "-A", s.V3.AuthPass,
		"-x", s.V3.PrivProtocol, "-X", s.V3.PrivPass, s.Addr}, oids...)
}
