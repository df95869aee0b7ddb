package meters

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/megawatch/megawatch/internal/topology"
)

// cpu is this process's user+system CPU time, and that of its waited-for
// children (snmpget in the peer baseline).
func cpu(who int) time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(who, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports CPU µs per poll and the meters one core polls at a 1 s
// cadence.
func reportCPU(b *testing.B, n int, d time.Duration) {
	us := float64(d.Microseconds()) / float64(n)
	b.ReportMetric(us, "cpu-µs/poll")
	if us > 0 {
		b.ReportMetric(1e6/us, "meters/core@1s")
	}
}

// BenchmarkPollCPU is the CPU of `megawatch meters` per meter poll against
// the real servers (snmpd, pymodbus; their own CPU is theirs, not counted),
// with same-run baselines: the raw UDP or TCP round trip of the same
// request (the floor: syscalls and the kernel), and snmpget, a process per
// poll (what a script-based poller pays).
//
//	go test ./meters -run '^$' -bench PollCPU -benchtime 2000x -count 3
func BenchmarkPollCPU(b *testing.B) {
	r := newRig(b)
	r.serve(b, 7345, 1234, 180.5, 23456)
	cfg := testConfig("bench")
	cfg.Timeout = 900 * time.Millisecond
	cfg.Interval = time.Second
	p, err := New(cfg, r.topo, r.js, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	byName := map[string]*meter{}
	for _, m := range p.meters {
		byName[m.def.Name] = m
	}
	ctx := context.Background()
	for _, name := range []string{"pdu-rk01-a", "pdu-rk03-b", "swgr-h1"} {
		m := byName[name]
		label := map[string]string{"pdu-rk01-a": "snmp-v2c", "pdu-rk03-b": "snmp-v3", "swgr-h1": "modbus"}[name]
		// read: the protocol client alone.
		b.Run("read/"+label, func(b *testing.B) {
			if _, err := m.r.Read(ctx); err != nil { // connect, discover outside the loop
				b.Fatal(err)
			}
			n, c0 := 0, cpu(syscall.RUSAGE_SELF)
			for b.Loop() {
				rctx, cancel := context.WithTimeout(ctx, time.Second)
				if _, err := m.r.Read(rctx); err != nil {
					b.Fatal(err)
				}
				cancel()
				n++
			}
			reportCPU(b, n, cpu(syscall.RUSAGE_SELF)-c0)
		})
		// poll: what the poller does per meter and window: read, metrics,
		// report, encode, JetStream publish with Msg-Id and ack.
		b.Run("poll/"+label, func(b *testing.B) {
			end := time.Now().Truncate(time.Second).Add(time.Hour)
			n, c0 := 0, cpu(syscall.RUSAGE_SELF)
			for b.Loop() {
				m.busy.Store(true)
				p.poll(ctx, job{m: m, windowEnd: end})
				end = end.Add(time.Second)
				n++
			}
			reportCPU(b, n, cpu(syscall.RUSAGE_SELF)-c0)
			if m.failures > 0 {
				b.Fatalf("poll failed: %s", m.lastErr)
			}
		})
	}

	// Baselines.
	m := byName["pdu-rk01-a"].def
	b.Run("baseline/udp-roundtrip", func(b *testing.B) {
		pkt := &gosnmp.SnmpPacket{Version: gosnmp.Version2c, Community: r.agent.Community, PDUType: gosnmp.GetRequest, RequestID: 1,
			Variables: []gosnmp.SnmpPDU{{Name: m.SNMP.Power.OID, Type: gosnmp.Null}, {Name: m.SNMP.Energy.OID, Type: gosnmp.Null}}}
		req, err := pkt.MarshalMsg()
		if err != nil {
			b.Fatal(err)
		}
		c, err := net.Dial("udp", r.agent.Addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 1500)
		n, c0 := 0, cpu(syscall.RUSAGE_SELF)
		for b.Loop() {
			if _, err := c.Write(req); err != nil {
				b.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := c.Read(buf); err != nil {
				b.Fatal(err)
			}
			n++
		}
		reportCPU(b, n, cpu(syscall.RUSAGE_SELF)-c0)
	})
	b.Run("baseline/tcp-roundtrip", func(b *testing.B) {
		c, err := net.Dial("tcp", r.mbus.Addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		// MBAP header + read holding registers 3059, 2 registers, unit 1.
		req := []byte{0, 1, 0, 0, 0, 6, 1, 3, 0x0b, 0xf3, 0, 2}
		resp := make([]byte, 9+4)
		n, c0 := 0, cpu(syscall.RUSAGE_SELF)
		for b.Loop() {
			if _, err := c.Write(req); err != nil {
				b.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := io.ReadFull(c, resp); err != nil {
				b.Fatal(err)
			}
			n++
		}
		reportCPU(b, n, cpu(syscall.RUSAGE_SELF)-c0)
	})
	b.Run("baseline/snmpget-exec", func(b *testing.B) {
		bin := testenv.SNMPGetBinary(b)
		args := append([]string{"-On", "-Oqv"}, r.agent.V2Args(m.SNMP.Power.OID, m.SNMP.Energy.OID)...)
		n, c0, k0 := 0, cpu(syscall.RUSAGE_SELF), cpu(syscall.RUSAGE_CHILDREN)
		for b.Loop() {
			cmd := exec.Command(bin, args...)
			cmd.Env = []string{"MIBS=", "MIBDIRS=/nonexistent", "SNMP_PERSISTENT_DIR=" + b.TempDir()}
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("snmpget: %v: %s", err, out)
			}
			n++
		}
		reportCPU(b, n, cpu(syscall.RUSAGE_SELF)-c0+cpu(syscall.RUSAGE_CHILDREN)-k0)
	})
}

// BenchmarkWindowCPU is the CPU per meter poll when the poller reads a
// whole window of meters at once (64 workers, as deployed): 200 PDUs on
// snmpd (v2c) and 50 branch circuits on one pymodbus device. Concurrent
// publishes share NATS flushes, so this is closer to production than the
// one-at-a-time PollCPU. One op = one window of all meters.
//
//	go test ./meters -run '^$' -bench WindowCPU -benchtime 20x -count 3
func BenchmarkWindowCPU(b *testing.B) {
	agent := testenv.StartSNMPD(b)
	mbus := testenv.StartModbusServer(b)
	b.Setenv("MW_BENCH_COMMUNITY", agent.Community)
	doc := fmt.Sprintf(`
domains:
  - name: dc1
    capacity_kw: 100000
    children:
      - name: h1
        capacity_kw: 50000
        children:
          - name: r[01-50]
            capacity_kw: 1000
            meters:
              - {name: "bcm-{row}", protocol: modbus, address: %q, modbus: {power: {address: 100, type: u32}}}
            children:
              - name: rk[1-4]
                capacity_kw: 100
                nodes: ["n-{row}-{rack}"]
                meters:
                  - {name: "pdu-{row}-{rack}", protocol: snmp, address: %q, snmp: {community_env: MW_BENCH_COMMUNITY, preset: apc-rpdu2-device}}
`, mbus.Addr, agent.Addr)
	topo, err := topology.Parse([]byte(doc), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	m0, _ := topo.Meter("pdu-r01-rk1")
	agent.Set(m0.SNMP.Power.OID, "integer", 1234)
	agent.Set(m0.SNMP.Energy.OID, "gauge", 42)
	mbus.SetHolding(100, 0, 5000)
	nats := testenv.StartNATSServer(b)
	js := natstest.JetStream(b, natstest.Connect(b, nats.URL))
	if _, err := natsx.EnsureStream(context.Background(), js, natsx.DefaultStreamsConfig().MeterStream()); err != nil {
		b.Fatal(err)
	}
	cfg := testConfig("bench")
	cfg.Interval, cfg.Timeout, cfg.Workers = time.Second, 900*time.Millisecond, 64
	reg := prometheus.NewRegistry()
	p, err := New(cfg, topo, js, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range p.jobs {
				p.poll(ctx, j)
			}
		}()
	}
	defer func() { close(p.jobs); wg.Wait(); cancel(); p.Close() }()
	window := func(end time.Time) {
		p.tick(ctx, end)
		for _, m := range p.meters {
			for m.busy.Load() {
				time.Sleep(200 * time.Microsecond)
			}
		}
	}
	end := time.Now().Truncate(time.Second).Add(time.Hour)
	window(end) // connect and discover outside the timing
	n, c0 := 0, cpu(syscall.RUSAGE_SELF)
	for b.Loop() {
		end = end.Add(time.Second)
		window(end)
		n += len(p.meters)
	}
	reportCPU(b, n, cpu(syscall.RUSAGE_SELF)-c0)
	if e := counter(b, reg, "megawatch_meters_errors_total", nil); e > 0 {
		b.Fatalf("%v read errors", e)
	}
}
