package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warren-proxy/warren/internal/harness"
	"github.com/warren-proxy/warren/internal/model"
)

// multi is a cluster of separate warren processes, written and run by
// internal/harness: proxies on 127.0.0.1, 127.0.0.2, … and agents, with an
// ssh_config naming every proxy. Its identity and user come from the CLI
// (writeCluster: `warren init`, `warren user add`), its join token from
// `warren token add`.
type multi struct {
	t       *testing.T
	h       *harness.Cluster
	dir     string
	token   string
	me      string
	proxies []*proxyProc
	cfg     string // ssh_config
}

// proxyProc is one proxy process of a multi.
type proxyProc = harness.Proxy

func newMulti(t *testing.T, proxies int, gossipKey string) *multi {
	t.Helper()
	regions := make([]string, proxies)
	for i := range regions {
		regions[i] = "local"
	}
	return newMultiIn(t, regions, gossipKey)
}

// newMultiIn is newMulti with proxy-i in regions[i-1].
func newMultiIn(t *testing.T, regions []string, gossipKey string) *multi {
	t.Helper()
	return newMultiWith(t, regions, gossipKey, "")
}

// newMultiWith is newMultiIn with extra YAML in every proxy's config.
func newMultiWith(t *testing.T, regions []string, gossipKey, extra string) *multi {
	t.Helper()
	dir, _, _, _ := writeCluster(t)
	h, err := harness.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The production gossip profile, as an operator would run it.
	h.Gossip = model.ProfileLAN
	h.ProxyExtra = "tunnel: {keepalive_interval: 1s}\n" + extra
	m := &multi{t: t, h: h, dir: dir, me: currentLogin(t)}
	for i, r := range regions {
		m.addProxyIn(i+1, r, gossipKey)
	}
	m.writeSSHConfig()
	// Several agents serve one name in these tests: they join with a
	// token whose grant names every resource (the static token's grant
	// would let only the first of them have a name).
	out, errs, code := runWarren(t, "token", "add", "--resources", "*", "--ttl", "1h",
		"--proxy", m.proxies[0].User, "-i", filepath.Join(dir, "alice"))
	if code != 0 {
		t.Fatalf("token add: code %d stderr %q", code, errs)
	}
	m.token = strings.TrimSpace(out)
	return m
}

// addProxy starts proxy-i on 127.0.0.i (a warren process), joining
// through proxy-1, with gossipKey in place of the cluster's if set. It
// returns once the proxy is up, joined or not.
func (m *multi) addProxy(i int, gossipKey string) *proxyProc {
	m.t.Helper()
	return m.addProxyIn(i, "local", gossipKey)
}

// addProxyIn is addProxy in region.
func (m *multi) addProxyIn(i int, region, gossipKey string) *proxyProc {
	t := m.t
	t.Helper()
	p := m.h.NewProxy(i, fmt.Sprintf("127.0.0.%d", i), region, fmt.Sprintf("zone-%d", i))
	if len(m.proxies) > 0 {
		p.Seeds = []string{m.proxies[0].Gossip}
	}
	p.GossipKey = gossipKey
	err := m.h.StartProxy(t.Context(), p, func(config string) harness.Command {
		return harness.Command{Bin: warrenBin, Args: []string{"proxy", "--config", config}}
	})
	if p.Proc != nil {
		proc := p.Proc
		t.Cleanup(func() {
			proc.Kill()
			if t.Failed() {
				log, _ := os.ReadFile(proc.Log)
				t.Logf("%s's log (%s):\n%s", p.ID, proc.Log, log)
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	m.proxies = append(m.proxies, p)
	return p
}

func (m *multi) writeSSHConfig() {
	var b strings.Builder
	for _, p := range m.proxies {
		host, port, _ := net.SplitHostPort(p.User)
		fmt.Fprintf(&b, "Host %s\n    HostName %s\n    Port %s\n    User alice\n", p.ID, host, port)
		fmt.Fprintf(&b, "    IdentityFile %[1]s/alice\n    CertificateFile %[1]s/alice-cert.pub\n    IdentitiesOnly yes\n    UserKnownHostsFile %[1]s/known_hosts\n    StrictHostKeyChecking yes\n", m.dir)
	}
	fmt.Fprintf(&b, "Host node1 node2\n    ProxyJump proxy-1\n    User %s\n", m.me)
	fmt.Fprintf(&b, "    IdentityFile %[1]s/alice\n    CertificateFile %[1]s/alice-cert.pub\n    IdentitiesOnly yes\n    UserKnownHostsFile %[1]s/known_hosts_resources\n    StrictHostKeyChecking yes\n", m.dir)
	m.cfg = filepath.Join(m.dir, "multi_ssh_config")
	os.WriteFile(m.cfg, []byte(b.String()), 0o644)
}

// startAgent runs an agent process serving resource (kind ssh) whose
// first proxy is m.proxies[first]; extra is more YAML.
func (m *multi) startAgent(name, resource string, first int, extra string) *proc {
	return m.startAgentYAML(name, first, fmt.Sprintf("%sresources:\n  - name: %s\n    kind: ssh\n", extra, resource))
}

// startAgentYAML runs an agent process whose first proxy is
// m.proxies[first], with extra YAML (resources and the rest).
func (m *multi) startAgentYAML(name string, first int, extra string) *proc {
	m.t.Helper()
	a := &harness.Agent{Name: name, Proxies: []string{m.proxies[first].Tunnel}, Token: m.token, Extra: extra}
	if err := m.h.WriteAgentConfig(a); err != nil {
		m.t.Fatal(err)
	}
	return start(m.t, "agent", "--config", a.Config)
}

func (m *multi) ssh(args ...string) (string, string, int) {
	return sshRun(m.t, m.cfg, args...)
}

// status returns a proxy's view of the cluster (`ssh proxy status --json`).
func (m *multi) status(p *proxyProc) []map[string]any {
	out, _, code := m.ssh(p.ID, "status", "--json")
	if code != 0 {
		return nil
	}
	var st []map[string]any
	json.Unmarshal([]byte(out), &st)
	return st
}

func (m *multi) waitMembers(n int, among []*proxyProc) {
	m.t.Helper()
	waitFor(m.t, fmt.Sprintf("%d members", n), func() bool {
		for _, p := range among {
			if len(m.status(p)) != n {
				return false
			}
		}
		return true
	})
}

// reachable reports whether resource answers through proxy p.
func (m *multi) reachable(p *proxyProc, resource string) bool {
	out, _, _ := m.ssh("-J", p.ID, resource, "echo ok")
	return out == "ok\n"
}

// tunnelSockets counts the agent process's established TCP connections to
// the proxies' tunnel ports, from /proc: the kernel's view, not ours.
func tunnelSockets(t *testing.T, pid int, tunnels []string) int {
	t.Helper()
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	want := map[string]bool{}
	for _, a := range tunnels {
		host, port, _ := net.SplitHostPort(a)
		ip := net.ParseIP(host).To4()
		p, _ := strconv.Atoi(port)
		// /proc/net/tcp prints IPv4 addresses little-endian in hex.
		want[fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], p)] = true
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "01" { // 01 = ESTABLISHED
			continue
		}
		if want[fields[2]] && inodes[fields[9]] {
			n++
		}
	}
	return n
}

func (m *multi) tunnelAddrs() []string {
	var out []string
	for _, p := range m.proxies {
		out = append(out, p.Tunnel)
	}
	return out
}

func localAgents(st []map[string]any) map[string]int {
	out := map[string]int{}
	for _, s := range st {
		n, _ := s["local_agents"].(float64)
		out[s["id"].(string)] = int(n)
	}
	return out
}

// TestThreeProxiesPeering: agents with connection_count 1 on different
// proxies are reached through every proxy; a large file crosses a peer hop;
// one tunnel per agent whatever the number of proxies; SIGKILL of the proxy
// holding a tunnel re-homes the agent; SIGKILL of an agent removes its
// routes everywhere.
func TestThreeProxiesPeering(t *testing.T) {
	m := newMulti(t, 3, "")
	m.waitMembers(3, m.proxies)
	a1 := m.startAgent("agent-1", "node1", 0, "")
	a2 := m.startAgent("agent-2", "node2", 1, "")
	for _, p := range m.proxies {
		for _, r := range []string{"node1", "node2"} {
			waitFor(t, r+" through "+p.ID, func() bool { return m.reachable(p, r) })
		}
	}
	// One tunnel per agent: from the proxies' counts and from the sockets.
	counts := localAgents(m.status(m.proxies[2]))
	total := 0
	for _, n := range counts {
		total += n
	}
	if total != 2 {
		t.Errorf("proxies count %v local agents, want 2 in all (one tunnel per agent)", counts)
	}
	for name, a := range map[string]*proc{"agent-1": a1, "agent-2": a2} {
		if n := tunnelSockets(t, a.cmd.Process.Pid, m.tunnelAddrs()); n != 1 {
			t.Errorf("%s has %d tunnel sockets, want 1", name, n)
		}
	}

	// 256 MiB across a peer hop: node1's agent dialled proxy-1; enter at proxy-3.
	holder := ""
	for id, n := range localAgents(m.status(m.proxies[0])) {
		if n > 0 && holder == "" {
			holder = id
		}
	}
	entry := m.proxies[2]
	if entry.ID == holder {
		entry = m.proxies[1]
	}
	src := filepath.Join(m.dir, "big")
	h := sha256.New()
	f, _ := os.Create(src)
	io.CopyN(io.MultiWriter(f, h), rand.Reader, 256<<20)
	f.Close()
	sum := hex.EncodeToString(h.Sum(nil))
	in, _ := os.Open(src)
	defer in.Close()
	dst := filepath.Join(m.dir, "copy")
	cmdArgs := []string{"-F", m.cfg, "-J", entry.ID, "node1", "cat > " + dst}
	if out, err := execWithStdin(in, "ssh", cmdArgs...); err != nil {
		t.Fatalf("256 MiB via %s: %v %s", entry.ID, err, out)
	}
	out, _, _ := m.ssh("-J", entry.ID, "node1", "sha256sum "+dst)
	if !strings.HasPrefix(out, sum) {
		t.Fatalf("256 MiB across a peer hop: got %q, want sha256 %s", out, sum)
	}
	// Exit statuses and EOF survive the hop, whichever side closes.
	if _, _, code := m.ssh("-J", entry.ID, "node1", "exit 7"); code != 7 {
		t.Fatalf("exit 7 across a peer hop: got %d", code)
	}
	if out, err := execWithStdin(strings.NewReader("abc"), "ssh", "-F", m.cfg, "-J", entry.ID, "node1", "cat; echo EOF-seen"); err != nil || out != "abcEOF-seen\n" {
		t.Fatalf("stdin EOF across a peer hop: got %q err %v", out, err)
	}

	// SIGKILL the proxy that holds agent-1's only tunnel.
	var victim *proxyProc
	for _, p := range m.proxies {
		if tunnelSockets(t, a1.cmd.Process.Pid, []string{p.Tunnel}) == 1 {
			victim = p
		}
	}
	if victim == nil {
		t.Fatal("cannot tell which proxy holds agent-1's tunnel")
	}
	var rest []*proxyProc
	for _, p := range m.proxies {
		if p != victim {
			rest = append(rest, p)
		}
	}
	victim.Proc.Signal(syscall.SIGKILL)
	killed := time.Now()
	for _, p := range rest {
		waitFor(t, "node1 through "+p.ID+" after its proxy died", func() bool { return m.reachable(p, "node1") })
	}
	t.Logf("re-home: node1 reachable through every remaining proxy %s after SIGKILL of %s", time.Since(killed).Round(time.Millisecond), victim.ID)
	m.waitMembers(2, rest)
	t.Logf("membership: %s declared dead by every other proxy %s after SIGKILL", victim.ID, time.Since(killed).Round(time.Millisecond))
	if n := tunnelSockets(t, a1.cmd.Process.Pid, m.tunnelAddrs()); n != 1 {
		t.Errorf("after re-homing agent-1 has %d tunnel sockets, want 1", n)
	}

	// SIGKILL agent-2: its routes vanish from every remaining proxy.
	a2.cmd.Process.Signal(syscall.SIGKILL)
	killed = time.Now()
	for _, p := range rest {
		waitFor(t, "node2 gone from "+p.ID, func() bool {
			out, _, _ := m.ssh(p.ID, "ls", "--json")
			var list []map[string]any
			json.Unmarshal([]byte(out), &list)
			for _, r := range list {
				if r["name"] == "node2" && r["status"] == "online" {
					return false
				}
			}
			return out != ""
		})
	}
	t.Logf("agent loss: node2 offline on every proxy %s after SIGKILL", time.Since(killed).Round(time.Millisecond))
}

func execWithStdin(stdin io.Reader, name string, args ...string) (string, error) {
	cmd := execCommand(name, args...)
	cmd.Stdin = stdin
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestMeshOneTunnelPerProxy: agent_mesh keeps one tunnel to every proxy
// and follows a proxy that joins.
func TestMeshFollowsProxies(t *testing.T) {
	m := newMulti(t, 2, "")
	m.waitMembers(2, m.proxies)
	a := m.startAgent("agent-1", "node1", 0, "tunnel_strategy: agent_mesh\n")
	waitFor(t, "2 mesh tunnels", func() bool { return tunnelSockets(t, a.cmd.Process.Pid, m.tunnelAddrs()) == 2 })
	m.addProxy(3, "")
	m.writeSSHConfig()
	waitFor(t, "3 mesh tunnels after a proxy joined", func() bool { return tunnelSockets(t, a.cmd.Process.Pid, m.tunnelAddrs()) == 3 })
	waitFor(t, "proxy-3 counts the agent as local", func() bool { return localAgents(m.status(m.proxies[2]))["proxy-3"] == 1 })
}

// TestWrongGossipKeyDoesNotJoin: a proxy with another gossip key is not a
// member of the cluster.
func TestWrongGossipKeyDoesNotJoin(t *testing.T) {
	m := newMulti(t, 2, "")
	m.waitMembers(2, m.proxies)
	// 32 bytes of zeros, base64: not the cluster's key.
	intruder := m.addProxy(3, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	m.writeSSHConfig()
	waitFor(t, "intruder up", func() bool { return m.status(intruder) != nil })
	// Give gossip time to (not) converge: several probe rounds.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if n := len(m.status(m.proxies[0])); n != 2 {
			t.Fatalf("proxy-1 sees %d members, want 2: the proxy with the wrong key joined", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := len(m.status(intruder)); n != 1 {
		t.Fatalf("the intruder sees %d members, want only itself", n)
	}
	// It says so where a load balancer looks: not ready, with the reason.
	var body string
	waitFor(t, "the intruder's /readyz to say why it is not ready", func() bool {
		resp, err := http.Get("http://" + intruder.HTTP + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(body, "gossip encryption keys differ")
	})
	t.Logf("intruder /readyz: %s", strings.TrimSpace(body))
	resp, err := http.Get("http://" + m.proxies[0].HTTP + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("proxy-1 /readyz: %v %v, want 200", resp, err)
	}
	resp.Body.Close()
}

// rss returns a process's resident set size in bytes.
func rss(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestLargeTransferBoundedMemory pushes a large stream through a peer hop
// (ssh client → proxy-2 → peer stream → proxy-1 → tunnel → agent) and
// samples every process's RSS: flow control must hold memory flat
// whatever the size. WARREN_TRANSFER_MIB sets the size (default 256;
// the figure in the issue notes used 10240 without -race).
func TestLargeTransferBoundedMemory(t *testing.T) {
	mib := int64(256)
	if v := os.Getenv("WARREN_TRANSFER_MIB"); v != "" {
		mib, _ = strconv.ParseInt(v, 10, 64)
	}
	m := newMulti(t, 2, "")
	m.waitMembers(2, m.proxies)
	a := m.startAgent("agent-1", "node1", 0, "")
	waitFor(t, "node1 via proxy-2", func() bool { return m.reachable(m.proxies[1], "node1") })
	procs := map[string]int{"proxy-1": m.proxies[0].Proc.PID(), "proxy-2": m.proxies[1].Proc.PID(), "agent": a.cmd.Process.Pid}
	peak := map[string]int64{}
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for name, pid := range procs {
				peak[name] = max(peak[name], rss(pid))
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	start := time.Now()
	src, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out, err := execWithStdin(io.LimitReader(src, mib<<20), "ssh", "-F", m.cfg, "-J", "proxy-2", "node1", "wc -c")
	elapsed := time.Since(start)
	close(stop)
	<-sampled
	if err != nil {
		t.Fatalf("transfer: %v %s", err, out)
	}
	if got := strings.TrimSpace(out); got != strconv.FormatInt(mib<<20, 10) {
		t.Fatalf("the node counted %s bytes, want %d", got, mib<<20)
	}
	t.Logf("%d MiB through a peer hop in %s (%.0f MiB/s); peak RSS: proxy-1 %d MiB, proxy-2 %d MiB, agent %d MiB",
		mib, elapsed.Round(time.Millisecond), float64(mib)/elapsed.Seconds(), peak["proxy-1"]>>20, peak["proxy-2"]>>20, peak["agent"]>>20)
	if !raceEnabled {
		for name, p := range peak {
			if p > 256<<20 {
				t.Errorf("%s peaked at %d MiB RSS: memory is not bounded by flow control", name, p>>20)
			}
		}
	}
}

// TestPausedProxyRejoins: a proxy stopped with SIGSTOP is declared dead,
// its agent re-homes, and when it resumes it rejoins and serves again
// without holding on to the tunnel it lost while paused.
func TestPausedProxyRejoins(t *testing.T) {
	m := newMulti(t, 3, "")
	m.waitMembers(3, m.proxies)
	m.startAgent("agent-1", "node1", 1, "") // dials proxy-2 first
	for _, p := range m.proxies {
		waitFor(t, "node1 via "+p.ID, func() bool { return m.reachable(p, "node1") })
	}
	paused := m.proxies[1]
	paused.Proc.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	waitFor(t, "proxy-2 declared dead", func() bool { return len(m.status(m.proxies[0])) == 2 })
	t.Logf("paused proxy declared dead after %s", time.Since(stopped).Round(time.Millisecond))
	waitFor(t, "node1 via proxy-1 while proxy-2 is paused", func() bool { return m.reachable(m.proxies[0], "node1") })
	paused.Proc.Signal(syscall.SIGCONT)
	resumed := time.Now()
	m.waitMembers(3, m.proxies)
	t.Logf("resumed proxy back in every membership after %s", time.Since(resumed).Round(time.Millisecond))
	waitFor(t, "node1 via the resumed proxy", func() bool { return m.reachable(paused, "node1") })
	waitFor(t, "the resumed proxy holds no stale tunnel", func() bool {
		return localAgents(m.status(paused))["proxy-2"] == 0
	})
}
