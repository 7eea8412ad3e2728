package bench

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warren-proxy/warren/bench/plot"
)

// sessionBuckets are the sessions table's rows, as offsets from the
// region's loss: 2 s wide from lead before it until 12 s after (the goal
// counts from 10 s), then 5 s wide until last.
func sessionBuckets(lead, last time.Duration) [][2]time.Duration {
	var out [][2]time.Duration
	from := -(lead + 2*time.Second - 1).Truncate(2 * time.Second)
	for from <= last && len(out) < 200 {
		width := 5 * time.Second
		if from < 12*time.Second {
			width = 2 * time.Second
		}
		out = append(out, [2]time.Duration{from, from + width})
		from += width
	}
	return out
}

func regionLossReport(res *regionLossResult) Report {
	cfg := res.cfg
	steady := Table{Name: "region-loss-steady", Title: "Region loss: steady state (every agent's tunnels, from the fleets)",
		Header: []string{"fleet region", "agents", "their tunnels by proxy region", "agents with both tunnels home", "tunnels the region's proxies hold (API)", "healthy replicas per resource on its proxies (API)"},
		Rows:   res.steady,
		Notes: []string{fmt.Sprintf("3 regions (one-way us–eu 40 ms, us–ap 60 ms, eu–ap 90 ms, 0.5 ms inside), 2 proxies each (zones a and b, gossip profile %s), one `warren bench fleet` process of %d real agents per region on its own host (region set, connection_count 2, probe_interval %s, seeds: its region's 2 proxies), agent i serving tcp resource svc-(i mod %d): every resource has %d replicas in every region (the fleets join with a token that grants svc-*: a name one agent claimed is served by another only if its token grants it). Every agent was home, and every replica healthy on every proxy, %s after the fleets started (joins included). The proxies' count includes the one `warren agent` per region that internal/regions starts (2 tunnels each).",
			cfg.Gossip, cfg.AgentsPerRegion, cfg.Probe, cfg.Resources, cfg.AgentsPerRegion/cfg.Resources, res.setup.Round(100*time.Millisecond))},
	}
	rehome := Table{Name: "region-loss-rehome", Title: "Region loss: agents re-homing, from the fault (or the restart) to the state named",
		Header: []string{"step", "agents", "reached it", "p50", "p99", "max", "where", "moves per agent (mean / max)", "left home again"}}
	var cdf []plot.Series
	for _, s := range res.steps {
		q := func(p float64) string {
			if len(s.took) == 0 {
				return "-"
			}
			return ms(s.took.Quantile(p))
		}
		flaps := "-"
		if s.moves != "-" {
			flaps = strconv.Itoa(s.flaps)
		}
		rehome.Rows = append(rehome.Rows, []string{s.name, strconv.Itoa(s.agents), strconv.Itoa(len(s.took)), q(0.5), q(0.99), q(1), s.where, s.moves, flaps})
		if len(s.took) > 0 {
			cdf = append(cdf, plot.Series{Name: s.name, Values: s.took.Millis()})
		}
	}
	rehome.Notes = append(rehome.Notes,
		"Times come from each agent's own view (its tunnels' proxies, sampled every 100 ms in the fleet process): they include up to 100 ms of sampling. **hold 2 tunnels again** after a proxy's death: the agent's slot on the dead proxy opened a tunnel to another proxy (its region's other proxy is held by its other slot, so elsewhere: the nearest region). **a tunnel elsewhere** after the region's loss: the first tunnel up to a proxy of another region; **where** counts those first tunnels by region (the nearest is the goal). **both tunnels home**: from the restarted proxies being ready; an agent moves a slot home once a proxy of its region has answered its probes for probe_interval (Settle), checked every probe_interval, new tunnel first. **moves**: proxies newly held per agent in the step (2 = each slot moved once); **left home again**: agents that, once home, opened a tunnel elsewhere again (flapping).")
	rehome.Notes = append(rehome.Notes, "Timeline: "+strings.Join(res.events, "; ")+".")
	if len(res.failed) > 0 {
		rehome.Notes = append(rehome.Notes, fmt.Sprintf("Agents that failed to start: %d, first: %s.", len(res.failed), res.failed[0]))
	}

	sessions := Table{Name: "region-loss-sessions", Title: fmt.Sprintf("Region loss: new sessions from the other regions' users, by time since %s's loss", cfg.Victim),
		Header: []string{"from", "to", "sessions", "failed", "broke", "p50", "p99"}}
	var late, lateFailed int
	var errs []string
	var last time.Time
	for _, s := range res.sessions {
		if s.Start.After(last) {
			last = s.Start
		}
	}
	for _, b := range sessionBuckets(cfg.Lead, last.Sub(res.kill)) {
		lo, hi := res.kill.Add(b[0]), res.kill.Add(b[1])
		var in []Session
		for _, s := range res.sessions {
			if !s.Start.Before(lo) && s.Start.Before(hi) {
				in = append(in, s)
			}
		}
		ok, failed, broken := summarize(in, time.Time{}, time.Time{})
		slices.Sort(ok)
		row := []string{fmt.Sprintf("%+.0f s", b[0].Seconds()), fmt.Sprintf("%+.0f s", b[1].Seconds()),
			strconv.Itoa(len(in)), strconv.Itoa(failed), strconv.Itoa(broken), "-", "-"}
		if len(ok) > 0 {
			row[5], row[6] = ms(ok.Median()), ms(ok.Quantile(0.99))
		}
		sessions.Rows = append(sessions.Rows, row)
	}
	for _, s := range res.sessions {
		if s.Start.Sub(res.kill) >= 10*time.Second {
			late++
			if s.Err != nil || s.IOErr != nil {
				lateFailed++
			}
		}
		if e := s.Err; e != nil && len(errs) < 4 && !slices.ContainsFunc(errs, func(x string) bool { return strings.HasSuffix(x, ": "+e.Error()) }) {
			errs = append(errs, fmt.Sprintf("%+.1f s: %v", s.Start.Sub(res.kill).Seconds(), e))
		}
	}
	sessions.Notes = append(sessions.Notes,
		fmt.Sprintf("Users of the regions left (%d SSH connections each, over their region's two proxies, Go's x/crypto/ssh with alice's certificate) open %d direct-tcpip sessions at once, each to the next of the %d resources, that carry one byte there and back (10 s limit), %s apart per worker. %s's proxies were started again at %+.1f s. Rows by session start; **failed**: could not open; **broke**: opened, then lost its byte.",
			cfg.Clients, cfg.Workers, cfg.Resources, cfg.Pause, cfg.Victim, res.restarted.Sub(res.kill).Seconds()),
		fmt.Sprintf("**From 10 s after the loss on: %d of %d sessions failed or broke** (the goal is none).", lateFailed, late))
	if len(errs) > 0 {
		sessions.Notes = append(sessions.Notes, "First distinct failures: "+strings.Join(errs, "; ")+".")
	}

	g := res.gossip
	gone := "never, within the outage"
	if !g.victimGone.IsZero() {
		gone = fmt.Sprintf("%.1f s", g.victimGone.Sub(res.kill).Seconds())
	}
	falseDead := "none"
	if len(g.falseDead) > 0 {
		falseDead = strings.Join(g.falseDead, "; ")
	}
	gossip := Table{Name: "region-loss-gossip", Title: "Region loss: membership and tunnel churn during the outage",
		Header: []string{"what", "measured"},
		Rows: [][]string{
			{fmt.Sprintf("live proxies' status polls during the outage (every 250 ms, each of the %d live proxies)", 4), strconv.Itoa(g.polls)},
			{"a live proxy seen as anything but alive by another live proxy", falseDead},
			{fmt.Sprintf("until no live proxy lists %s's proxies as alive", cfg.Victim), gone},
			{fmt.Sprintf("tunnels %s's agents opened during the outage (%d agents, 2 each)", cfg.Victim, cfg.AgentsPerRegion), strconv.Itoa(res.opened)},
			{"tunnels the other regions' agents lost during the outage", strconv.Itoa(res.lost)},
			{fmt.Sprintf("%s's proxies ready until every proxy sees every other (peer links up)", cfg.Victim), ms(res.rejoined)},
		}}

	rep := Report{Scenario: "region-loss", Tables: []Table{steady, rehome, sessions, gossip}}
	if len(res.timeline) >= 2 {
		var series []plot.Series
		for _, r := range regionLossRegions {
			series = append(series, plot.Series{Name: "tunnels on " + r + "'s proxies", Values: res.perRegion[r]})
		}
		rep.Plots = append(rep.Plots, Plot{Name: "region-loss-timeline", Render: func(w io.Writer) error {
			return plot.Lines(w, fmt.Sprintf("Fleet agents' tunnels by the region of their proxy (%d agents, 2 tunnels each): proxy-us-1 killed and back, then %s lost and back", 3*cfg.AgentsPerRegion, cfg.Victim),
				"seconds since steady state", "tunnels", res.timeline, series)
		}})
	}
	if len(cdf) > 0 {
		rep.Plots = append(rep.Plots, Plot{Name: "region-loss-rehome", Render: func(w io.Writer) error {
			return plot.CDF(w, "Time to re-home, per agent, by step", "ms", cdf)
		}})
	}
	return rep
}
