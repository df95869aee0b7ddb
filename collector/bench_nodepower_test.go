package collector

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/megawatch/megawatch/collector/nodepower"
	"github.com/megawatch/megawatch/collector/nodepower/bmctest"
	"github.com/megawatch/megawatch/internal/telemetry"
)

// TestBMCHelperProcess is not a test: BenchmarkNodePower runs the test
// binary with MEGAWATCH_BMC_HELPER=1 to serve the mock BMC from another
// process, so that the benchmark's getrusage counts the collector side
// only. It prints the URL and the CA file and serves until stdin closes.
func TestBMCHelperProcess(t *testing.T) {
	if os.Getenv("MEGAWATCH_BMC_HELPER") != "1" {
		t.Skip("helper process for BenchmarkNodePower")
	}
	bmc := bmctest.New(t)
	bmc.SetPowerW(6543)
	fmt.Printf("%s %s\n", bmc.URL(), bmc.CAFile(t))
	_, _ = io.Copy(io.Discard, os.Stdin)
}

func startBMCProcess(b *testing.B) nodepower.RedfishConfig {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBMCHelperProcess$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), "MEGAWATCH_BMC_HELPER=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("BMC helper: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		b.Fatalf("BMC helper said %q", line)
	}
	cfg := nodepower.DefaultConfig().Redfish
	cfg.URL, cfg.CAFile = f[0], f[1]
	return cfg
}

// timed reads src as the poller does: under the source's timeout.
func timed(src nodepower.Source) error {
	ctx, cancel := context.WithTimeout(context.Background(), 900*time.Millisecond)
	defer cancel()
	_, err := src.Read(ctx)
	return err
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkNodePower is the collector's CPU for one 1 s window of an
// 8-GPU node (BenchmarkWindow's sampling, summary and encoding) with a
// node-power source read once per window, against the same run without
// one (source=none). redfish reads the DMTF mockup BMC over TLS from
// another process (one GET of EnvironmentMetrics and one of the energy
// sensor, keep-alive, JSON decode); hwmon reads the sysfs fixture. The
// read runs in the loop here, in its own goroutine in the collector: the
// CPU is the same. cpu-ms/s is getrusage user+sys per window, i.e. per
// second at 1 s windows.
func BenchmarkNodePower(b *testing.B) {
	for _, src := range []string{"none", "hwmon", "redfish"} {
		b.Run("source="+src, func(b *testing.B) {
			cfg := testConfig()
			var read func() error
			switch src {
			case "hwmon":
				cfg.NodePower.Sources = []string{nodepower.SourceHwmon}
				cfg.NodePower.Hwmon.SysfsRoot = unpackSysfs(b)
				h := nodepower.NewHwmon(cfg.NodePower.Hwmon.SysfsRoot)
				read = func() error { return timed(h) }
			case "redfish":
				cfg.NodePower.Sources = []string{nodepower.SourceRedfish}
				cfg.NodePower.Redfish = startBMCProcess(b)
				rf, err := nodepower.NewRedfish(cfg.NodePower.Redfish)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(rf.Close)
				read = func() error { return timed(rf) }
			default:
				cfg.NodePower.Sources = nil
			}
			m := newMetrics(nil, testLoc.Node)
			gpus, err := openGPUs(newConstLib(), m)
			if err != nil {
				b.Fatal(err)
			}
			now := time.Unix(1_800_000_000, 0).UnixNano()
			for _, g := range gpus {
				g.now = func() time.Time { return time.Unix(0, now) }
			}
			subject, _ := telemetry.PowerSubject(testLoc)
			var last entry
			s := newSampler(cfg, testLoc, subject, gpus, 42, m, slog.New(slog.DiscardHandler), func(e entry) { last = e })
			if read != nil {
				np, err := nodepower.New(cfg.NodePower, cfg.Window, testLoc.Node, nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				s.np = np
				if err := read(); err != nil { // discovery, the first connection
					b.Fatal(err)
				}
			}
			step := func() {
				s.tick(now)
				for i := range s.gpus {
					select {
					case req := <-s.reqs[i]:
						s.accept(s.gpus[i].read(req))
					default:
					}
				}
			}
			now = (now/s.window + 1) * s.window
			step()
			for range 2 * s.slots {
				now += s.slot
				step()
			}
			b.ReportAllocs()
			cpu0 := cpuNow()
			for b.Loop() {
				if read != nil {
					if err := read(); err != nil {
						b.Fatal(err)
					}
				}
				for range s.slots {
					now += s.slot
					step()
				}
			}
			cpu := cpuNow() - cpu0
			if len(last.data) == 0 {
				b.Fatal("no report")
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/1e6, "cpu-ms/s")
		})
	}
}
