package grafana_test

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/testenv"
)

// fillWindows is how much history the synthetic fill writes (1 s windows).
const fillWindows = 300

// fillSynthetic writes line protocol that follows DESIGN.md's InfluxDB
// schema exactly (measurements gpu, node, rollup, alert, meter; the field types
// that ingest writes) through influxd's /write: one site dc1 with halls
// h1 and h2, two rows of two racks each, two 8-GPU nodes per rack. A
// training job oscillates at 0.5 Hz; one GPU is throttled, one is lost,
// and hall h1 crosses 95% of its capacity (an alert that fires and
// resolves).
func fillSynthetic(t *testing.T, d *testenv.Influxd, db string) {
	t.Helper()
	end := time.Now().Truncate(time.Second)
	start := end.Add(-fillWindows * time.Second)
	halls, rows, racks, nodes, gpus := []string{"h1", "h2"}, []string{"r01", "r02"}, []string{"k01", "k02"}, 2, 8
	const gpuCapW, rackCapKW, rowCapKW, hallCapKW, siteCapKW = 1000.0, 16.0, 30.0, 55.0, 120.0

	// Each measurement goes to the retention policy the shipped ingest
	// config sends it to; the database and policies are created as
	// ingest's --ensure-db does (CREATE DATABASE, CREATE RETENTION POLICY).
	tg := shippedTarget(t, d.URL)
	d.CreateDB(t, db)
	for _, p := range tg.RetentionPolicies {
		d.Exec(t, db, fmt.Sprintf(`CREATE RETENTION POLICY %q ON %q DURATION %s REPLICATION 1`, p.Name, db, influxDuration(p.Duration)))
	}
	var buf bytes.Buffer
	flush := func() {
		if buf.Len() == 0 {
			return
		}
		byRP := map[string]*bytes.Buffer{}
		for line := range bytes.Lines(buf.Bytes()) {
			m, _, _ := bytes.Cut(line, []byte(","))
			rp := shippedRP(t, tg, string(m))
			if byRP[rp] == nil {
				byRP[rp] = &bytes.Buffer{}
			}
			byRP[rp].Write(line)
		}
		for rp, b := range byRP {
			writeLP(t, d, db, rp, b.Bytes())
		}
		buf.Reset()
	}
	type agg struct{ w, maxW float64 }
	for i := range fillWindows {
		ts := start.Add(time.Duration(i+1) * time.Second)
		sec := float64(i)
		ns := ts.UnixNano()
		rackSum := map[string]*agg{}
		rowSum := map[string]*agg{}
		hallSum := map[string]*agg{}
		site := &agg{}
		for hi, h := range halls {
			for _, r := range rows {
				for _, k := range racks {
					for n := range nodes {
						node := fmt.Sprintf("gpu-%s-%s-%s-n%02d", h, r, k, n+1)
						var nodeW, nodeMax float64
						healthy := 0
						for g := range gpus {
							// h1 runs hotter: it crosses 95% of its capacity mid-way.
							base := 560.0 + 40*math.Sin(2*math.Pi*0.5*sec+float64(g))
							if hi == 0 {
								base += 60
								if i > fillWindows/3 && i < 2*fillWindows/3 {
									base += 180
								}
							}
							temp := 55 + base/25 + float64(g)
							ok := !(h == "h1" && r == "r01" && k == "k01" && n == 1 && g == 7) // one lost GPU
							throttle := 0
							if h == "h1" && r == "r01" && k == "k01" && n == 0 && g == 3 {
								throttle, temp = 0x20, 89 // SW thermal slowdown
							}
							if !ok {
								fmt.Fprintf(&buf, "gpu,gpu=%d,hall=%s,node=%s,rack=%s,row=%s,site=dc1 healthy=false %d\n", g, h, node, k, r, ns)
								continue
							}
							healthy++
							nodeW += base
							nodeMax += base + 25
							fmt.Fprintf(&buf, "gpu,gpu=%d,hall=%s,node=%s,rack=%s,row=%s,site=dc1 energy_mj=%di,healthy=true,mem_temp_c=%.0f,power_limit_w=700,power_max_w=%.1f,power_min_w=%.1f,power_w=%.3f,sm_clock_mhz=%d,temp_c=%.0f,throttle_reasons=%di,util_pct=%d %d\n",
								g, h, node, k, r, int64(sec*base*1000), temp+8, base+25, base-25, base, 1980-10*throttle, temp, throttle, 97, ns)
						}
						fmt.Fprintf(&buf, "node,hall=%s,node=%s,rack=%s,row=%s,site=dc1 gpus=%di,gpus_healthy=%di,power_max_w=%.1f,power_w=%.3f %d\n", h, node, k, r, gpus, healthy, nodeMax, nodeW, ns)
						for key, a := range map[string]map[string]*agg{h + "/" + r + "/" + k: rackSum, h + "/" + r: rowSum, h: hallSum} {
							if a[key] == nil {
								a[key] = &agg{}
							}
							a[key].w += nodeW
							a[key].maxW += nodeMax
						}
						site.w += nodeW
						site.maxW += nodeMax
					}
				}
			}
		}
		// Facility fields (wire 40-57) as an aggregator that computes them
		// writes them: node power 1.45 × GPU power; metered 1.6 × where
		// the meters are fresh (halls, rows and the site), none on racks
		// (their PDUs are stale: syntheticMeters), whose figure is the node sum.
		rollup := func(tags string, a *agg, capKW float64, expected, meters, stale int, metered bool) {
			mw, capMW := a.w/1e6, capKW/1e3
			nodeMW := mw * 1.45
			facMW, src, fac := nodeMW, "node", ""
			if metered {
				facMW, src = mw*1.6, "meter"
				fac = fmt.Sprintf("metered_mw=%g,unaccounted_mw=%g,", facMW, facMW-nodeMW)
			}
			fmt.Fprintf(&buf, "rollup,%s capacity_mw=%g,coverage=1,facility_degraded=false,facility_max_mw=%g,facility_mw=%g,facility_source=%q,headroom_mw=%g,%smeters=%di,meters_stale=%di,node_power_est_mw=%g,node_power_modeled_mw=0,node_power_mw=%g,nodes_expected=%di,nodes_power_measured=%di,nodes_reporting=%di,osc_freq_hz=0.5,osc_mw=%g,power_est_mw=%g,power_max_mw=%g,power_mw=%g,ramp_mw_per_s=%g,swing_mw=%g %d\n",
				tags, capMW, facMW+(a.maxW-a.w)/1e6, facMW, src, capMW-facMW, fac, meters, stale, nodeMW, nodeMW, expected, expected, expected, mw*0.07, mw, a.maxW/1e6, mw, mw*0.01*math.Cos(2*math.Pi*0.5*sec), mw*0.14, ns)
		}
		rollup("level=site,site=dc1", site, siteCapKW, len(halls)*len(rows)*len(racks)*nodes, len(halls)*(1+len(rows)*2), len(halls)*len(rows), true)
		hallW, rowW := map[string]float64{}, map[string]float64{}
		for _, h := range halls {
			rollup("hall="+h+",level=hall,site=dc1", hallSum[h], hallCapKW, len(rows)*len(racks)*nodes, 1+len(rows)*2, len(rows), true)
			hallW[h] = hallSum[h].w
			for _, r := range rows {
				rollup("hall="+h+",level=row,row="+r+",site=dc1", rowSum[h+"/"+r], rowCapKW, len(racks)*nodes, 2, 1, true)
				rowW[h+"/"+r] = rowSum[h+"/"+r].w
				for i, k := range racks {
					rollup("hall="+h+",level=rack,rack="+k+",row="+r+",site=dc1", rackSum[h+"/"+r+"/"+k], rackCapKW, nodes, 1-i, 1-i, false)
				}
			}
		}
		syntheticMeters(&buf, ns, i+1, hallW, rowW)
		if buf.Len() > 1<<20 {
			flush()
		}
	}
	// hall h1 crosses 95%: pending, firing, resolved.
	for _, ev := range []struct {
		at    int
		state string
		value float64
	}{{fillWindows/3 + 2, "pending", 0.962}, {fillWindows/3 + 32, "firing", 0.964}, {2*fillWindows/3 + 3, "resolved", 0.90}} {
		ts := start.Add(time.Duration(ev.at) * time.Second).UnixNano()
		fmt.Fprintf(&buf, "alert,domain=dc1/h1,level=hall,rule=hall_capacity,severity=critical message=%q,state=%q,threshold=0.95,value=%g %d\n",
			fmt.Sprintf("hall dc1/h1 at %.1f%% of its capacity", ev.value*100), ev.state, ev.value, ts)
	}
	flush()
}

// influxDuration is d as an InfluxQL duration literal (0 = INF).
func influxDuration(d time.Duration) string {
	if d == 0 {
		return "INF"
	}
	return fmt.Sprintf("%ds", int64(d/time.Second))
}

// writeLP posts line protocol to influxd's 1.x /write endpoint, into
// retention policy rp of db.
func writeLP(t *testing.T, d *testenv.Influxd, db, rp string, lp []byte) {
	t.Helper()
	resp, err := http.Post(d.URL+"/write?db="+url.QueryEscape(db)+"&rp="+url.QueryEscape(rp)+"&precision=ns", "text/plain; charset=utf-8", bytes.NewReader(lp))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("write: %d %s (first line %q)", resp.StatusCode, b, strings.SplitN(string(lp), "\n", 2)[0])
	}
}
