package meters

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// ProbeResult is one meter's reading (or error) from Probe.
type ProbeResult struct {
	Meter, Domain, Protocol, Address string
	Reading                          Reading
	Err                              error
	Latency                          time.Duration
}

// Probe reads every meter once (with the configured workers and timeouts)
// and returns the results in topology order: the tool to check a new
// meter mapping before it goes live. Nothing is published.
func (p *Poller) Probe(ctx context.Context) []ProbeResult {
	out := make([]ProbeResult, len(p.meters))
	sem := make(chan struct{}, min(p.cfg.Workers, len(p.meters)))
	var wg sync.WaitGroup
	for i, m := range p.meters {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			rctx, cancel := context.WithTimeout(ctx, m.timeout)
			defer cancel()
			start := time.Now()
			rd, err := m.r.Read(rctx)
			out[i] = ProbeResult{Meter: m.def.Name, Domain: m.def.Domain.Key(), Protocol: m.protoS, Address: m.def.Address,
				Reading: rd, Err: err, Latency: time.Since(start)}
		}()
	}
	wg.Wait()
	return out
}

// WriteProbe prints probe results as a table; it returns how many failed.
func WriteProbe(w io.Writer, rs []ProbeResult) int {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "METER\tDOMAIN\tPROTOCOL\tADDRESS\tPOWER_W\tENERGY_WH\tLATENCY\tERROR")
	failed := 0
	for _, r := range rs {
		power, energy, errText := "-", "-", ""
		if r.Err != nil {
			failed++
			errText = strings.ReplaceAll(r.Err.Error(), "\n", " ")
		} else {
			power = strconv.FormatFloat(r.Reading.PowerW, 'f', -1, 64)
			if r.Reading.HasEnergy {
				energy = strconv.FormatFloat(r.Reading.EnergyWh, 'f', -1, 64)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Meter, r.Domain, r.Protocol, r.Address, power, energy,
			r.Latency.Round(100*time.Microsecond), errText)
	}
	_ = tw.Flush()
	return failed
}

// Close releases the meters' connections (Run does it on return).
func (p *Poller) Close() { p.close() }
