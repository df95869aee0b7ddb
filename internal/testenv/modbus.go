package testenv

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

//go:embed testdata/modbus_server.py
var modbusServerPy []byte

// ModbusServer is a real Modbus TCP server (Debian's python3-pymodbus 3.0
// running testdata/modbus_server.py) on 127.0.0.1, serving a register map
// that the test sets.
type ModbusServer struct {
	*Proc
	Addr string // 127.0.0.1:<port>

	t    testing.TB
	path string
	mu   sync.Mutex
	regs map[string]map[string]uint16
}

// PythonWithPymodbus finds a python3 that can import pymodbus (Debian's
// /usr/bin/python3 first: a pyenv or venv python3 on PATH may lack it).
func PythonWithPymodbus() (string, error) {
	cands := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		cands = append(cands, p)
	}
	for _, c := range cands {
		if err := exec.Command(c, "-c", "import pymodbus.server, pymodbus.datastore").Run(); err == nil {
			return c, nil
		}
	}
	return "", fmt.Errorf("no python3 with pymodbus (tried %v)", cands)
}

// StartModbusServer starts the server with an empty register map. A missing
// pymodbus skips the test, or fails it under CI=true.
func StartModbusServer(t testing.TB) *ModbusServer {
	t.Helper()
	Short(t)
	py, err := PythonWithPymodbus()
	if err != nil {
		missing(t, "modbus test server", err)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "modbus_server.py")
	if err := os.WriteFile(script, modbusServerPy, 0o700); err != nil {
		t.Fatal(err)
	}
	s := &ModbusServer{t: t, path: filepath.Join(dir, "registers.json"),
		regs: map[string]map[string]uint16{"holding": {}, "input": {}}}
	s.write()
	port := FreePort(t)
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.Proc = StartProc(t, "pymodbus", py, script, "127.0.0.1", strconv.Itoa(port), s.path)
	s.WaitReady()
	return s
}

// WaitReady waits until the server accepts connections (after Start too).
func (s *ModbusServer) WaitReady() {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if !s.Running() {
			s.t.Fatalf("pymodbus server exited:\n%s", s.Output())
		}
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("pymodbus server not listening on %s after 60s:\n%s", s.Addr, s.Output())
}

// Restart starts the server again on the same port with the same registers.
func (s *ModbusServer) Restart() {
	s.t.Helper()
	if err := s.Start(); err != nil {
		s.t.Fatalf("restart pymodbus: %v", err)
	}
	s.WaitReady()
}

// SetHolding sets holding registers from addr on (function 3).
func (s *ModbusServer) SetHolding(addr uint16, regs ...uint16) { s.set("holding", addr, regs) }

// SetInput sets input registers from addr on (function 4).
func (s *ModbusServer) SetInput(addr uint16, regs ...uint16) { s.set("input", addr, regs) }

func (s *ModbusServer) set(table string, addr uint16, regs []uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range regs {
		s.regs[table][strconv.Itoa(int(addr)+i)] = r
	}
	s.write()
}

// write replaces the register file atomically (the server re-reads it on
// every request).
func (s *ModbusServer) write() {
	b, err := json.Marshal(s.regs)
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
