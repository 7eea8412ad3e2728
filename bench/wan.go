package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/warren-proxy/warren/internal/wan"
	"golang.org/x/sys/unix"
)

// WANConfig is the emulated WAN whose honesty the "wan" scenario checks:
// two hosts in each region, the one-way delays between regions, and a
// rate cap between them.
type WANConfig struct {
	Regions []string
	// OneWay is the delay between two regions, by "a-b" in either order;
	// Inside the delay between two hosts of one region.
	OneWay map[string]time.Duration
	Inside time.Duration
	// Rate caps every path between regions, in bytes per second, behind a
	// queue of Queue bytes.
	Rate  int64
	Queue int
	// Probes is the number of one-byte round trips per pair; Bytes what
	// one TCP connection sends per pair for the throughput.
	Probes int
	Bytes  int64
}

// DefaultWANConfig is the latency matrix of the regions benchmark.
func DefaultWANConfig() WANConfig {
	return WANConfig{
		Regions: []string{"us", "eu", "ap"},
		OneWay:  map[string]time.Duration{"us-eu": 40 * time.Millisecond, "us-ap": 60 * time.Millisecond, "eu-ap": 90 * time.Millisecond},
		Inside:  500 * time.Microsecond,
		Rate:    50 << 20, Queue: 4 << 20,
		Probes: 50, Bytes: 64 << 20,
	}
}

// TinyWANConfig is the smoke test's.
func TinyWANConfig() WANConfig {
	c := DefaultWANConfig()
	c.Probes, c.Bytes = 10, 4<<20
	return c
}

func (c WANConfig) oneWay(a, b string) time.Duration {
	if a == b {
		return c.Inside
	}
	if d, ok := c.OneWay[a+"-"+b]; ok {
		return d
	}
	return c.OneWay[b+"-"+a]
}

// Topology is the emulated network: hosts REGION-1 and REGION-2.
func (c WANConfig) Topology() wan.Topology {
	t := wan.Topology{Inside: wan.Link{Delay: c.Inside}, Between: map[[2]string]wan.Link{}}
	for _, r := range c.Regions {
		t.Hosts = append(t.Hosts, wan.Host{Name: r + "-1", Region: r}, wan.Host{Name: r + "-2", Region: r})
		for _, o := range c.Regions {
			if o != r {
				t.Between[[2]string{r, o}] = wan.Link{Delay: c.oneWay(r, o), Rate: c.Rate, Queue: c.Queue}
			}
		}
	}
	return t
}

func wanFlags(fs *flag.FlagSet, tiny bool) func(context.Context, Env) (Report, error) {
	c := DefaultWANConfig()
	if tiny {
		c = TinyWANConfig()
	}
	fs.IntVar(&c.Probes, "probes", c.Probes, "one-byte round trips per pair of hosts")
	fs.Int64Var(&c.Bytes, "bytes", c.Bytes, "bytes sent per pair for the throughput")
	fs.Int64Var(&c.Rate, "rate", c.Rate, "cap between regions, bytes per second (0: none)")
	return func(ctx context.Context, env Env) (Report, error) {
		if c.Probes < 1 || c.Bytes < 1 || c.Rate < 0 {
			return Report{}, errors.New("wan: --probes and --bytes must be positive, --rate not negative")
		}
		return RunWAN(ctx, env, c)
	}
}

// RunWAN builds the emulated network and measures, between host 1 of
// each region and host 2 of each region (its own included), the round
// trip of one byte over TCP and the throughput of one TCP connection,
// against what the topology says.
func RunWAN(ctx context.Context, env Env, c WANConfig) (Report, error) {
	n, err := wan.New(c.Topology())
	if err != nil {
		return Report{}, fmt.Errorf("wan: %w (the emulated WAN needs root, iproute2 and /dev/net/tun)", err)
	}
	defer n.Close()
	// An echo server on host 2 of every region: it echoes a probe byte,
	// and swallows a transfer's bytes, answering with one byte at the end.
	for _, r := range c.Regions {
		h := r + "-2"
		var ln net.Listener
		if err := n.Do(h, func() (err error) {
			ln, err = net.Listen("tcp", n.Addr(h).String()+":7")
			return err
		}); err != nil {
			return Report{}, err
		}
		defer ln.Close()
		go serveWANProbe(ln)
	}
	tab := Table{Name: "wan", Title: "The emulated WAN: configured against measured, between every pair of regions",
		Header: []string{"from → to", "configured RTT", "RTT min", "RTT p50", "RTT p99", "configured cap", "TCP, 1 connection", "TCP, 4 connections", "UDP at 1.2× the cap"}}
	for _, a := range c.Regions {
		for _, b := range c.Regions {
			if err := ctx.Err(); err != nil {
				return Report{}, err
			}
			env.progress("wan: %s-1 → %s-2", a, b)
			row, err := measureWANPair(n, c, a+"-1", b+"-2", a == b)
			if err != nil {
				return Report{}, fmt.Errorf("wan: %s → %s: %w", a, b, err)
			}
			tab.Rows = append(tab.Rows, append([]string{a + " → " + b, ms(2 * c.oneWay(a, b))}, row...))
		}
	}
	tab.Notes = append(tab.Notes,
		fmt.Sprintf("Two hosts per region, each in its own network namespace; every packet between them passes through Warren's user-space emulator (internal/wan): one-way delay per pair of regions, %s inside a region, a cap of %s between regions behind a %d KiB queue. TCP: per pair, %d one-byte round trips, then %d MiB one way over one connection, then over four at once (one connection across an ocean is held back by its window, not by the cap); then the same in UDP datagrams of 1400 bytes paced at 1.2× the cap (100 MiB/s where there is none): what arrives, and how fast, is the cap itself.",
			ms(c.Inside), rate(c.Rate), c.Queue>>10, c.Probes, c.Bytes>>20),
		"Packets dropped by the emulator: "+dropsText(n.Dropped())+" (queue: the cap's tail drop, as TCP finds the rate; not IPv4: the hosts' IPv6 chatter).")
	return Report{Scenario: "wan", Tables: []Table{tab}}, nil
}

// dropsText lists the packets an emulator dropped, by reason in order
// ("none" for none).
func dropsText(drops map[string]int) string {
	var out []string
	for k, v := range drops {
		out = append(out, fmt.Sprintf("%s %d", k, v))
	}
	if len(out) == 0 {
		return "none"
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

func rate(r int64) string {
	if r == 0 {
		return "none"
	}
	return rateMiB(float64(r))
}

// serveWANProbe echoes single bytes; a byte 2 starts a transfer: an
// 8-byte length, that many bytes, and one byte back.
func serveWANProbe(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			b := make([]byte, 8)
			for {
				if _, err := io.ReadFull(c, b[:1]); err != nil {
					return
				}
				if b[0] == 2 {
					if _, err := io.ReadFull(c, b); err != nil {
						return
					}
					if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint64(b))); err != nil {
						return
					}
				}
				if _, err := c.Write(b[:1]); err != nil {
					return
				}
			}
		}()
	}
}

// measureWANPair returns RTT min, p50, p99, the cap and the throughput
// of one connection and of four.
func measureWANPair(n *wan.Net, cfg WANConfig, from, to string, inside bool) ([]string, error) {
	var conn net.Conn
	if err := n.Do(from, func() (err error) {
		conn, err = net.DialTimeout("tcp", n.Addr(to).String()+":7", 10*time.Second)
		return err
	}); err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Minute))
	b := []byte{1}
	var rtts []time.Duration
	for range cfg.Probes {
		start := time.Now()
		if _, err := conn.Write(b); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(conn, b); err != nil {
			return nil, err
		}
		rtts = append(rtts, time.Since(start))
	}
	slices.Sort(rtts)
	start := time.Now()
	if err := sendWAN(conn, cfg.Bytes); err != nil {
		return nil, err
	}
	one := time.Since(start)
	// Four connections at once: one TCP connection across an ocean is
	// held back by its window (bandwidth × delay), four show the cap.
	conns := []net.Conn{}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 4 {
		if err := n.Do(from, func() error {
			c, err := net.DialTimeout("tcp", n.Addr(to).String()+":7", 10*time.Second)
			if err == nil {
				c.SetDeadline(time.Now().Add(5 * time.Minute))
				conns = append(conns, c)
			}
			return err
		}); err != nil {
			return nil, err
		}
	}
	start = time.Now()
	errs := make(chan error, len(conns))
	for _, c := range conns {
		go func() { errs <- sendWAN(c, cfg.Bytes/4) }()
	}
	for range conns {
		if err := <-errs; err != nil {
			return nil, err
		}
	}
	four := time.Since(start)
	pace := cfg.Rate * 6 / 5
	if inside || pace == 0 {
		pace = 100 << 20
	}
	udp, err := udpRate(n, from, to, cfg.Bytes, pace)
	if err != nil {
		return nil, err
	}
	capText := rate(cfg.Rate)
	if inside {
		capText = "none"
	}
	return []string{ms(rtts[0]), ms(rtts[len(rtts)/2]), ms(rtts[len(rtts)*99/100]), capText,
		mibps(cfg.Bytes, one), mibps(cfg.Bytes/4*4, four), udp}, nil
}

// udpRate sends size bytes of UDP datagrams from one host to the other at
// pace bytes per second and returns the rate at which they arrived and
// the share that did: at a pace above a path's cap, the cap, with no TCP
// in the way.
func udpRate(n *wan.Net, from, to string, size, pace int64) (string, error) {
	var pc net.PacketConn
	if err := n.Do(to, func() (err error) {
		pc, err = net.ListenPacket("udp", n.Addr(to).String()+":0")
		return err
	}); err != nil {
		return "", err
	}
	defer pc.Close()
	// A receive buffer that holds a burst: the default (208 KiB) drops
	// in the receiving host, not on the path.
	if rc, err := pc.(*net.UDPConn).SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20)
		})
	}
	var sc net.Conn
	if err := n.Do(from, func() (err error) {
		sc, err = net.Dial("udp", pc.LocalAddr().String())
		return err
	}); err != nil {
		return "", err
	}
	defer sc.Close()
	type result struct {
		bytes       int64
		first, last time.Time
	}
	done := make(chan result, 1)
	go func() {
		var r result
		buf := make([]byte, 2048)
		for {
			// The sender is done when nothing arrives for a second.
			pc.SetReadDeadline(time.Now().Add(time.Second))
			k, _, err := pc.ReadFrom(buf)
			if err != nil {
				done <- r
				return
			}
			if r.bytes == 0 {
				r.first = time.Now()
			}
			r.bytes += int64(k)
			r.last = time.Now()
		}
	}()
	// Paced in 1 ms steps: a sender blasting at full speed starves the
	// emulator of CPU on a small machine and measures that instead.
	msg := make([]byte, 1400)
	start := time.Now()
	for sent := int64(0); sent < size; sent += int64(len(msg)) {
		if due := start.Add(time.Duration(float64(sent) / float64(pace) * float64(time.Second))); time.Until(due) > time.Millisecond {
			time.Sleep(time.Until(due))
		}
		sc.Write(msg) // a full socket buffer drops, as the path would
	}
	r := <-done
	if r.bytes == 0 || !r.last.After(r.first) {
		return "-", nil
	}
	return fmt.Sprintf("%s (%.0f%% arrived)", mibps(r.bytes, r.last.Sub(r.first)), 100*float64(r.bytes)/float64(size/1400*1400)), nil
}

// sendWAN sends a transfer of size bytes to serveWANProbe and waits for
// its end.
func sendWAN(conn net.Conn, size int64) error {
	hdr := binary.BigEndian.AppendUint64([]byte{2}, uint64(size))
	if _, err := conn.Write(hdr); err != nil {
		return err
	}
	chunk := make([]byte, 256<<10)
	for sent := int64(0); sent < size; {
		k := min(int64(len(chunk)), size-sent)
		if _, err := conn.Write(chunk[:k]); err != nil {
			return err
		}
		sent += k
	}
	_, err := io.ReadFull(conn, hdr[:1])
	return err
}
