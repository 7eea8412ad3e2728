package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/warren-proxy/warren/bench/plot"
	"github.com/warren-proxy/warren/internal/regions"
)

// The wan-load scenario measures the far rows of issue 13 ("near and
// far"): a user in one region working on a node in another, across an
// ocean whose links are capped, with the emulated WAN of the regions
// scenario (internal/wan through regionsBed). Two questions:
//
//   - Does a keystroke still come back in the path's round trip when
//     another session of the same user uploads without pause on the same
//     route? Warren multiplexes both sessions onto one peer link and one
//     agent tunnel, so whatever its buffers hold in front of the
//     keystroke adds to its round trip; the stock anchor (ssh -J a
//     bastion in the node's region) keeps each session on connections of
//     its own, which share only the emulated link and its queue.
//   - How close does a download through `ssh -L` come to what one plain
//     TCP stream gets on the same path? OpenSSH's 2 MiB channel window
//     holds the bastion to 2 MiB per round trip; Warren ends the user's
//     SSH at the entry proxy, so its own peer link and tunnel windows
//     decide.
//
// Both run on one route, so that the sessions share what they should:
// one proxy per region, and the node's agent keeps a single tunnel, to
// its own region's proxy. The user's sessions enter their own region's
// proxy, cross the one peer link to the node's region and take the one
// tunnel to the node's sshd (a `kind: tcp` resource).

// WANLoadConfig sizes the wan-load scenario.
type WANLoadConfig struct {
	// Bed is the regions bed it runs on: its WAN matrix (only User's and
	// Node's regions are started), capped between regions at WAN.Rate
	// behind WAN.Queue, with the node agents' single tunnel and byte
	// sources.
	Bed RegionsConfig
	// User is the user's region, Node the node's.
	User, Node string
	// RoundTrips keystrokes are measured per row, after Warm to warm up;
	// an upload under way Settle before the first loaded one.
	RoundTrips, Warm int
	Settle           time.Duration
	// DownloadBytes per download; Downloads per path (the median is
	// reported).
	DownloadBytes int64
	Downloads     int
}

// DefaultWANLoadConfig is the full run: eu to ap, the farthest pair of
// the regions matrix (90 ms one way), capped at 200 Mbit/s each way.
func DefaultWANLoadConfig() WANLoadConfig {
	bed := DefaultRegionsConfig()
	bed.WAN.Regions = []string{"eu", "ap"}
	bed.WAN.Rate = 200e6 / 8
	// About the path's bandwidth-delay product, a little more: 25 MB/s ×
	// 180 ms is 4.5 MB, so 5 MiB (1.17×). A router queue of one BDP lets
	// one TCP stream fill the link through its losses; more only adds
	// delay when something fills it.
	bed.WAN.Queue = 5 << 20
	bed.ProxiesPerRegion, bed.Capped, bed.Tunnels, bed.Sources = 1, true, 1, true
	return WANLoadConfig{Bed: bed, User: "eu", Node: "ap", RoundTrips: 400, Warm: 20, Settle: 2 * time.Second,
		DownloadBytes: 64 << 20, Downloads: 3}
}

// TinyWANLoadConfig only checks that it works (CI), on the same path.
func TinyWANLoadConfig() WANLoadConfig {
	c := DefaultWANLoadConfig()
	c.RoundTrips, c.Warm, c.Settle, c.DownloadBytes, c.Downloads = 15, 3, time.Second, 4<<20, 1
	return c
}

// sourcePort is where the node hosts' byte sources listen (chargen's).
const sourcePort = "19"

// serveSource sends bytes: a client writes an 8-byte length and gets that
// many bytes (block over and over), then the end of the stream. A
// connection lasts 10 minutes at most.
func serveSource(ln net.Listener, block []byte) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Minute))
			var hdr [8]byte
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			for left := int64(binary.BigEndian.Uint64(hdr[:])); left > 0; {
				k, err := c.Write(block[:min(int64(len(block)), left)])
				left -= int64(k)
				if err != nil {
					return
				}
			}
		}()
	}
}

// wanKeystrokes is one row of the keystroke table: a route, idle or under
// load.
type wanKeystrokes struct {
	name, load string
	rtts       Durations
	upload     string // the upload's rate meanwhile, "none" when idle
}

// wanDownload is one path of the download table.
type wanDownload struct {
	name, command string
	times         Durations
}

// wanLoadRun is a running wan-load bed and what it measured.
type wanLoadRun struct {
	cfg        WANLoadConfig
	env        Env
	bed        *regionsBed
	keystrokes []*wanKeystrokes
	downloads  []*wanDownload
	drops      map[string]int
	tcp        string // the node host's TCP settings, as its namespace has them
}

// RunWANLoad measures keystrokes idle and under an upload on the same
// route, and downloads through `ssh -L`, from cfg.User's region to a node
// in cfg.Node's, through Warren, through a stock bastion and on the
// network itself.
func RunWANLoad(ctx context.Context, env Env, cfg WANLoadConfig) (Report, error) {
	began, load := time.Now(), loadAverage()
	bed, err := startRegionsBed(ctx, env, cfg.Bed)
	if err != nil {
		return Report{}, fmt.Errorf("wan-load: %w", err)
	}
	defer bed.close()
	r := &wanLoadRun{cfg: cfg, env: env, bed: bed, tcp: tcpSettings(bed, regions.ExtraHost(cfg.Node, nodeHost))}
	if err := r.measureKeystrokes(ctx); err != nil {
		return Report{}, fmt.Errorf("wan-load: %w", err)
	}
	if err := r.measureDownloads(ctx); err != nil {
		return Report{}, fmt.Errorf("wan-load: %w", err)
	}
	r.drops = bed.cluster.Net.Dropped()
	return r.report(time.Since(began), load), nil
}

// tcpSettings are host's congestion control and socket buffer limits:
// a namespace's own copies of the machine's, which bound what one stream
// keeps in flight across the ocean.
func tcpSettings(bed *regionsBed, host string) string {
	var out []string
	bed.cluster.Net.Do(host, func() error {
		// /proc/sys/net is the reading thread's namespace's.
		for _, k := range []string{"tcp_congestion_control", "tcp_wmem", "tcp_rmem"} {
			if b, err := os.ReadFile("/proc/sys/net/ipv4/" + k); err == nil {
				out = append(out, k+" "+strings.Join(strings.Fields(string(b)), " "))
			}
		}
		return nil
	})
	if len(out) == 0 {
		return "unknown"
	}
	return strings.Join(out, ", ")
}

// warrenArgs and bastionArgs are the ssh arguments of the two SSH routes
// to the node's sshd.
func (r *wanLoadRun) warrenArgs() []string {
	return []string{"-J", r.entry(), "sshd-" + r.cfg.Node}
}

func (r *wanLoadRun) bastionArgs() []string {
	return []string{"-J", regions.ExtraHost(r.cfg.Node, bastionHost), regions.ExtraHost(r.cfg.Node, nodeHost)}
}

// entry is the user's region's proxy, where Warren's sessions enter.
func (r *wanLoadRun) entry() string { return r.bed.cluster.Proxies(r.cfg.User)[0].ID }

func (r *wanLoadRun) measureKeystrokes(ctx context.Context) error {
	cfg := r.cfg
	r.env.progress("keystrokes on the network: %d round trips between %s and %s", cfg.RoundTrips,
		regions.UserHost(cfg.User), regions.ExtraHost(cfg.Node, nodeHost))
	netw, err := r.bed.keystrokes(ctx, &regionRoute{layout: layoutNetwork, user: cfg.User, node: cfg.Node}, cfg.RoundTrips, cfg.Bed.Pace)
	if err != nil {
		return fmt.Errorf("network round trips: %w", err)
	}
	r.keystrokes = append(r.keystrokes, &wanKeystrokes{name: "network (TCP echo, user host ↔ node host)", load: "idle", rtts: netw, upload: "none"})
	block := randomBlock()
	for _, rt := range []struct {
		name, load string
		args       []string
	}{
		{"Warren, " + r.entry() + " → peer link → agent tunnel", "under an upload on the same route", r.warrenArgs()},
		{"ssh -J " + regions.ExtraHost(cfg.Node, bastionHost), "under an upload through the same bastion", r.bastionArgs()},
	} {
		r.env.progress("keystrokes on %s: %d idle, then %d under an upload", rt.name, cfg.RoundTrips, cfg.RoundTrips)
		res := &interactiveResult{route: route{Name: rt.name, Args: rt.args}, bulkArgs: rt.args}
		if err := measureUnderLoad(ctx, r.bed.clients[cfg.User], res, cfg.RoundTrips, cfg.Warm, cfg.Settle, block); err != nil {
			return fmt.Errorf("%s: %w", rt.name, err)
		}
		r.keystrokes = append(r.keystrokes,
			&wanKeystrokes{name: rt.name, load: "idle", rtts: res.idle, upload: "none"},
			&wanKeystrokes{name: rt.name, load: rt.load, rtts: res.loaded, upload: mibps(res.bulkBytes, res.bulkTime)})
	}
	return nil
}

func (r *wanLoadRun) measureDownloads(ctx context.Context) error {
	cfg, c := r.cfg, r.bed.cluster
	user := regions.UserHost(cfg.User)
	nodeIP := c.Net.Addr(regions.ExtraHost(cfg.Node, nodeHost)).String()
	source := net.JoinHostPort(nodeIP, sourcePort)
	// The two forwards listen on the user host's loopback, in a namespace
	// of its own: no other process takes these ports.
	paths := []struct {
		name, local, target string
		args                []string
	}{
		{"plain TCP, one stream", "", source, nil},
		{"Warren: ssh -L via " + r.entry(), "127.0.0.1:20019", "source-" + cfg.Node + ":" + sourcePort, []string{r.entry()}},
		{"ssh -J bastion: ssh -L via the node's sshd", "127.0.0.1:20020", source, r.bastionArgs()},
	}
	addrs := make([]string, len(paths))
	for i, p := range paths {
		d := &wanDownload{name: p.name}
		r.downloads = append(r.downloads, d)
		if p.local == "" {
			addrs[i], d.command = source, "TCP from "+user+" to "+source
			continue
		}
		d.command = fmt.Sprintf("ssh -N -L %s:%s %s", p.local, p.target, strings.Join(p.args, " "))
		r.env.progress("starting %s", d.command)
		log := filepath.Join(c.Spec.Dir, fmt.Sprintf("ssh-forward-%d.log", i))
		fwd, err := r.bed.clients[cfg.User].startForward(log, p.local+":"+p.target, p.args...)
		if err != nil {
			return err
		}
		r.bed.stop.add(fwd.Stop)
		// The forward's listener is the client's half; a byte source
		// answering through it is the whole path.
		if err := waitUp(fwd, waitUntil(ctx, 30*time.Second, 100*time.Millisecond, "a download through "+d.command, func() bool {
			if fwd.Exited() {
				return true
			}
			_, err := r.download(ctx, user, p.local, 1<<10)
			return err == nil
		})); err != nil {
			return fmt.Errorf("%s: %w (its log: %s)", d.command, err, log)
		}
		addrs[i] = p.local
	}
	// Round by round, every path in each, so that a noisy moment of the
	// machine hits them all.
	for run := 1; run <= cfg.Downloads; run++ {
		for i, d := range r.downloads {
			r.env.progress("download %d/%d: %s over %s", run, cfg.Downloads, sizeName(cfg.DownloadBytes), d.name)
			t, err := r.download(ctx, user, addrs[i], cfg.DownloadBytes)
			if err != nil {
				return fmt.Errorf("%s: %w", d.command, err)
			}
			d.times = append(d.times, t)
		}
	}
	return nil
}

// download asks the byte source at addr, dialed from host, for n bytes
// and times them from the request to the last byte.
func (r *wanLoadRun) download(ctx context.Context, host, addr string, n int64) (time.Duration, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := r.bed.cluster.Net.DialContext(dctx, host, "tcp", addr)
	cancel()
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	// At least 0.5 MiB/s, and never past ctx.
	conn.SetDeadline(time.Now().Add(30*time.Second + time.Duration(n>>19)*time.Second))
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	start := time.Now()
	if _, err := conn.Write(binary.BigEndian.AppendUint64(nil, uint64(n))); err != nil {
		return 0, err
	}
	buf := make([]byte, 256<<10)
	var got int64
	for {
		k, err := conn.Read(buf)
		got += int64(k)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("after %d of %d bytes: %w", got, n, err)
		}
	}
	d := time.Since(start)
	if got != n {
		return 0, fmt.Errorf("the stream ended after %d of %d bytes", got, n)
	}
	return d, nil
}

// pathRTT is the network's own round trip, p50: what a keystroke's
// round trip is held against.
func (r *wanLoadRun) pathRTT() time.Duration { return r.keystrokes[0].rtts.Median() }

func (r *wanLoadRun) report(took time.Duration, load string) Report {
	cfg := r.cfg
	rtt := r.pathRTT()
	pair := cfg.User + " → " + cfg.Node
	keys := Table{Name: "wan-load-keystrokes",
		Title:  fmt.Sprintf("Keystroke round trip %s across a %s link, idle and under an upload (goal: p99 ≤ path RTT + 5 ms under load)", pair, mbit(cfg.Bed.WAN.Rate)),
		Header: []string{"route", "load", "p50", "p99", "p99 − path RTT", "p99 ≤ path RTT + 5 ms", "upload meanwhile"}}
	labels := make([]string, len(r.keystrokes))
	p50s, p99s := plot.Series{Name: "p50"}, plot.Series{Name: "p99"}
	var cdfs []plot.Series
	for i, k := range r.keystrokes {
		p99 := k.rtts.Quantile(0.99)
		met := yesNo(p99 <= rtt+5*time.Millisecond)
		if i == 0 {
			met = "(the path)"
		}
		keys.Rows = append(keys.Rows, []string{k.name, k.load, ms(k.rtts.Median()), ms(p99), signedMs(p99 - rtt), met, k.upload})
		labels[i] = k.name + ", " + k.load
		p50s.Values = append(p50s.Values, float64(k.rtts.Median())/1e6)
		p99s.Values = append(p99s.Values, float64(p99)/1e6)
		cdfs = append(cdfs, plot.Series{Name: labels[i], Values: k.rtts.Millis()})
	}
	oneWay := cfg.Bed.WAN.oneWay(cfg.User, cfg.Node)
	bdp := float64(cfg.Bed.WAN.Rate) * (2 * oneWay).Seconds()
	keys.Notes = []string{
		fmt.Sprintf("One run, %s from start to end (cluster start included). The emulated WAN (internal/wan through the regions bed): regions %s, %s one way between them, %s inside a region; each direction between the regions capped at %s behind a %d KiB queue, %.2f× the path's bandwidth-delay product (%s × %s RTT = %.0f KiB); no loss, no jitter. Packets the emulator dropped over the whole run: %s (queue: the cap's tail drop; not IPv4: the hosts' IPv6 chatter).",
			took.Round(time.Second), strings.Join(cfg.Bed.WAN.Regions, " and "), oneWay, cfg.Bed.WAN.Inside, mbit(cfg.Bed.WAN.Rate), cfg.Bed.WAN.Queue>>10,
			float64(cfg.Bed.WAN.Queue)/bdp, mbit(cfg.Bed.WAN.Rate), 2*oneWay, bdp/1024, dropsText(r.drops)),
		fmt.Sprintf("One route for Warren's sessions: the user (stock OpenSSH on %s) enters %s, the only proxy of %s; the session crosses the one peer link to %s's proxy and the one tunnel of the agent on %s (connection_count 1, to its own region's proxy) to the node's stock sshd, a `kind: tcp` resource (`ssh -J %s sshd-%s`). The upload (`ssh … 'cat >/dev/null'` fed random bytes without pause) takes the same arguments, so the same entry proxy, peer link and agent tunnel; only the user's SSH connections to the entry proxy are its own. The anchor: `ssh -J %s %s`, keystrokes and upload through the same stock sshd bastion, each on connections of its own. Cipher %s on every SSH hop.",
			regions.UserHost(cfg.User), r.entry(), cfg.User, cfg.Node, regions.ExtraHost(cfg.Node, nodeHost), r.entry(), cfg.Node,
			regions.ExtraHost(cfg.Node, bastionHost), regions.ExtraHost(cfg.Node, nodeHost), Cipher),
		fmt.Sprintf("Round trip: one byte through `ssh … cat`, %d samples idle after %d to warm up, then %d while the upload runs (started %s before the first). The network row is a TCP echo between the user's host and the node's (%d samples after %d, no two less than %s apart); path RTT is its p50, %s. The bastion's upload is held to OpenSSH's 2 MiB channel window per round trip and Warren's to its peer link's static 1 MiB window on the node region's proxy, both less than the cap, so neither should fill the emulated queue (the drops above say whether the queue overflowed): what an upload adds to a keystroke waits in the hosts' and the hops' buffers.",
			cfg.RoundTrips, cfg.Warm, cfg.RoundTrips, cfg.Settle, cfg.RoundTrips, min(10, cfg.RoundTrips), cfg.Bed.Pace, ms(rtt)),
		fmt.Sprintf("Load average (1 min) of the machine, other work included: %s at the start, %s at the end.", load, loadAverage()),
	}

	var plainRate float64
	if d := r.downloads[0].times.Median(); d > 0 {
		plainRate = float64(cfg.DownloadBytes) / d.Seconds()
	}
	down := Table{Name: "wan-load-download",
		Title:  fmt.Sprintf("Download %s from a tcp resource in %s to a user in %s through ssh -L (goal: Warren ≥ 80%% of plain TCP)", sizeName(cfg.DownloadBytes), cfg.Node, cfg.User),
		Header: []string{"path", "command", fmt.Sprintf("rate (median of %d)", cfg.Downloads), "time (median)", "% of plain TCP", "≥ 80% of plain TCP"}}
	rates := plot.Series{Name: "download"}
	var names []string
	for i, d := range r.downloads {
		t := d.times.Median()
		rate := float64(cfg.DownloadBytes) / t.Seconds()
		share := 100 * rate / plainRate
		met := yesNo(share >= 80)
		if i == 0 {
			met = "(the limit)"
		}
		down.Rows = append(down.Rows, []string{d.name, "`" + d.command + "`", mibps(cfg.DownloadBytes, t),
			fmt.Sprintf("%.1f s", t.Seconds()), fmt.Sprintf("%.0f%%", share), met})
		names = append(names, d.name)
		rates.Values = append(rates.Values, rate/(1<<20))
	}
	down.Notes = []string{
		fmt.Sprintf("The node's host runs a byte source (port %s) that sends what a client asks for; the agent on that host serves it as the `kind: tcp` resource source-%s. Each download asks for %s and is timed from the request to its last byte, so it includes a round trip and TCP's ramp-up; %d per path, the paths in turn round by round, one at a time. The forwards stay up across rounds and were checked with a 1 KiB download first.",
			sourcePort, cfg.Node, sizeName(cfg.DownloadBytes), cfg.Downloads),
		fmt.Sprintf("Plain TCP is one connection from the user's host to the source, with the kernel's default buffers: the limit of one stream on this path, whose window may hold it under the %s cap (the node host's TCP: %s; the sender's buffer, tcp_wmem's last figure, bounds what it keeps in flight). Warren's `ssh -L` ends the user's SSH at %s, in the user's region, so the ocean is crossed on Warren's peer link and the bytes leave the node's region on its agent tunnel. The bastion's `ssh -J … -L` runs one SSH session end to end with the node's sshd, which connects to the source: OpenSSH's 2 MiB channel window across the path's round trip holds it to about 2 MiB per %s.",
			mbit(cfg.Bed.WAN.Rate), r.tcp, r.entry(), ms(rtt)),
	}
	return Report{
		Scenario: "wan-load",
		Tables:   []Table{keys, down},
		Plots: []Plot{
			{Name: "wan-load-keystrokes", Render: func(w io.Writer) error {
				return plot.Bars(w, fmt.Sprintf("Keystroke round trip %s, idle and under an upload", pair), "ms", labels, []plot.Series{p50s, p99s})
			}},
			{Name: "wan-load-keystrokes-cdf", Render: func(w io.Writer) error {
				return plot.CDF(w, fmt.Sprintf("Keystroke round trip %s, idle and under an upload", pair), "ms", cdfs)
			}},
			{Name: "wan-load-download", Render: func(w io.Writer) error {
				return plot.Bars(w, fmt.Sprintf("Download of %s from a node in %s to a user in %s, median of %d", sizeName(cfg.DownloadBytes), cfg.Node, cfg.User, cfg.Downloads), "MiB/s", names, []plot.Series{rates})
			}},
		},
	}
}

// mbit formats bytes per second as a link's rate.
func mbit(bytesPerSec int64) string {
	return fmt.Sprintf("%g Mbit/s", float64(bytesPerSec)*8/1e6)
}

func wanLoadFlags(fs *flag.FlagSet, tiny bool) func(context.Context, Env) (Report, error) {
	c := DefaultWANLoadConfig()
	if tiny {
		c = TinyWANLoadConfig()
	}
	fs.IntVar(&c.RoundTrips, "round-trips", c.RoundTrips, "keystroke round trips per row (idle, and again under load)")
	mbits := fs.Int64("rate-mbit", c.Bed.WAN.Rate*8/1e6, "cap of each direction between the regions, Mbit/s")
	queue := fs.Int("queue-kib", c.Bed.WAN.Queue>>10, "queue in front of each cap, KiB")
	mib := fs.Int64("download-mib", c.DownloadBytes>>20, "MiB per download")
	fs.IntVar(&c.Downloads, "downloads", c.Downloads, "downloads per path (the median is reported)")
	return func(ctx context.Context, env Env) (Report, error) {
		c.Bed.WAN.Rate, c.Bed.WAN.Queue, c.DownloadBytes = *mbits*1e6/8, *queue<<10, *mib<<20
		if c.RoundTrips < 1 || c.Downloads < 1 || c.DownloadBytes < 1 || c.Bed.WAN.Rate < 1 || c.Bed.WAN.Queue < 64<<10 {
			return Report{}, errors.New("wan-load: --round-trips, --downloads, --download-mib and --rate-mbit must be at least 1, --queue-kib at least 64")
		}
		return RunWANLoad(ctx, env, c)
	}
}
