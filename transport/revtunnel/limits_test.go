package revtunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/model"
)

// resources returns n tcp resources r-0 … r-(n-1), each with labels.
func resources(n int, labels func(i int) map[string]string) []ResourceStatus {
	rs := make([]ResourceStatus, n)
	for i := range rs {
		rs[i] = ResourceStatus{Name: fmt.Sprintf("r-%d", i), Kind: model.KindTCP, Healthy: true}
		if labels != nil {
			rs[i].Labels = labels(i)
		}
	}
	return rs
}

// labelSet returns n labels whose keys ("k00"…) and values (valueLen
// bytes) hold n*(3+valueLen) bytes.
func labelSet(n, valueLen int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[fmt.Sprintf("k%02d", i)] = strings.Repeat("v", valueLen)
	}
	return m
}

// TestHeartbeatCaps: what one agent may publish is bounded, and a
// heartbeat over a bound is refused with a reason while the tunnel keeps
// serving normal heartbeats.
func TestHeartbeatCaps(t *testing.T) {
	a := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a))
	h := &recHandler{}
	c, _, _ := tunnel(t, p, agentSigner(t, a, "agent-1"), "agent-1", Trust{CA: a.HostCA.PublicKey()}, h, Hello{Version: "test"})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	normal := Heartbeat{Seq: 1, Resources: []ResourceStatus{{Name: "web", Kind: model.KindTCP, Port: 8080, Labels: map[string]string{"env": "prod"}, Healthy: true}}}
	one := func(r ResourceStatus) Heartbeat {
		if r.Name == "" {
			r.Name = "web"
		}
		if r.Kind == "" {
			r.Kind = model.KindTCP
		}
		return Heartbeat{Resources: []ResourceStatus{r}}
	}
	// 8 resources × 32 labels × (3+125) bytes = MaxLabelBytes exactly.
	if MaxLabelBytes != 8*32*(3+125) {
		t.Fatalf("MaxLabelBytes is %d; update the label cases", MaxLabelBytes)
	}
	atCap := func(i int) map[string]string { return labelSet(32, 125) }
	overCap := func(i int) map[string]string {
		m := labelSet(32, 125)
		if i == 7 {
			m["k00"] += "v"
		}
		return m
	}
	tests := []struct {
		name string
		hb   Heartbeat
		want string // the refusal; "" means accepted
	}{
		{"normal", normal, ""},
		{"256 resources", Heartbeat{Resources: resources(MaxResources, nil)}, ""},
		{"257 resources", Heartbeat{Resources: resources(MaxResources+1, nil)}, "257 resources; one agent may serve at most 256"},
		{"labels at the byte cap", Heartbeat{Resources: resources(8, atCap)}, ""},
		{"labels a byte over the cap", Heartbeat{Resources: resources(8, overCap)}, "resources carry more than 32768 bytes of labels"},
		{"32 labels", one(ResourceStatus{Labels: labelSet(model.MaxLabels, 1)}), ""},
		{"33 labels", one(ResourceStatus{Labels: labelSet(model.MaxLabels+1, 1)}), "resources[0] web: 33 labels; at most 32"},
		{"label value too long", one(ResourceStatus{Labels: map[string]string{"env": strings.Repeat("v", 129)}}), "resources[0] web: label env: value"},
		{"label value with a comma", one(ResourceStatus{Labels: map[string]string{"env": "a,b"}}), `resources[0] web: label env: value "a,b"`},
		{"label key with a space", one(ResourceStatus{Labels: map[string]string{"e v": "x"}}), `resources[0] web: label key "e v"`},
		{"256-byte detail", one(ResourceStatus{Detail: strings.Repeat("d", 256)}), ""},
		{"1 KiB detail", one(ResourceStatus{Detail: strings.Repeat("d", 1024)}), "resources[0] web: health detail of 1024 bytes; at most 256"},
		{"port 65535", one(ResourceStatus{Port: 65535}), ""},
		{"port 65536", one(ResourceStatus{Port: 65536}), "resources[0] web: port 65536 is out of range"},
		{"port -1", one(ResourceStatus{Port: -1}), "resources[0] web: port -1 is out of range"},
		{"normal again", normal, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.heartbeats())
			_, err := c.Heartbeat(ctx, tt.hb)
			calls := len(h.heartbeats()) - before
			if tt.want == "" {
				if err != nil || calls != 1 {
					t.Errorf("got %v and %d handler calls, want accepted and 1", err, calls)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), quoted(tt.want)) {
				t.Errorf("got %v, want a refusal holding %q", err, tt.want)
			}
			if calls != 0 {
				t.Errorf("a heartbeat over a cap reached the handler (%d calls), want 0", calls)
			}
		})
	}
}

// joinFrom joins through addr like Join, from the local address local.
func joinFrom(ctx context.Context, local, addr, token string, req JoinRequest, trust Trust) (JoinResponse, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return JoinResponse{}, err
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	conn, chans, reqs, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{
		User: JoinUser, Auth: []ssh.AuthMethod{ssh.Password(token)},
		HostKeyCallback: trust.hostKeyCallback(nil),
	})
	if err != nil {
		return JoinResponse{}, err
	}
	defer conn.Close()
	go ssh.DiscardRequests(reqs)
	go rejectChannels(chans)
	ok, payload, err := conn.SendRequest(ReqJoin, true, encode(req))
	if err != nil {
		return JoinResponse{}, err
	}
	var resp JoinResponse
	if err := decode(payload, &resp); err != nil {
		return JoinResponse{}, err
	}
	if !ok || resp.Error != "" {
		return resp, fmt.Errorf("join refused: %s", resp.Error)
	}
	return resp, nil
}

// TestJoinRateLimit: join attempts from one address are limited before
// the token is looked at, and the limit is per address.
func TestJoinRateLimit(t *testing.T) {
	a := newAuthority(t)
	trust := Trust{CA: a.HostCA.PublicKey()}
	joinReq := func(t *testing.T, name string) JoinRequest {
		return JoinRequest{Name: name, PublicKey: string(ssh.MarshalAuthorizedKey(newKey(t).PublicKey()))}
	}
	// start returns a proxy with the given limit that records the host
	// every join came from.
	start := func(t *testing.T, burst int, interval time.Duration) (*proxy, func() []string) {
		cfg := baseServerConfig(t, a)
		cfg.JoinBurst, cfg.JoinInterval = burst, interval
		var mu sync.Mutex
		var hosts []string
		join := cfg.Join
		cfg.Join = func(req JoinRequest, token string, remote net.Addr) (JoinResponse, error) {
			mu.Lock()
			hosts = append(hosts, hostOf(remote))
			mu.Unlock()
			return join(req, token, remote)
		}
		return startProxy(t, cfg), func() []string {
			mu.Lock()
			defer mu.Unlock()
			return append([]string(nil), hosts...)
		}
	}

	t.Run("burst then refused, other address unaffected", func(t *testing.T) {
		p, joinedFrom := start(t, 3, time.Hour)
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		steps := []struct {
			name       string
			token      string
			wantChecks int32 // CheckJoinToken calls so far
		}{
			{"1st, wrong token", "wrong-1", 1},
			{"2nd, wrong token", "wrong-2", 2},
			{"3rd, wrong token", "wrong-3", 3},
			{"4th, wrong token: limited, token not checked", "wrong-4", 3},
			{"5th, right token: limited too", goodToken, 3},
		}
		for _, st := range steps {
			_, _, err := Join(ctx, p.addr, st.token, joinReq(t, "agent-1"), trust)
			if !errors.Is(err, ErrJoinRefused) {
				t.Errorf("%s: got %v, want ErrJoinRefused", st.name, err)
			}
			if got := p.tokenChecks.Load(); got != st.wantChecks {
				t.Errorf("%s: got %d CheckJoinToken calls, want %d", st.name, got, st.wantChecks)
			}
		}
		resp, err := joinFrom(ctx, "127.0.0.2", p.addr, goodToken, joinReq(t, "agent-2"), trust)
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Skipf("cannot bind 127.0.0.2: %v", err)
		}
		if err != nil || resp.AgentID != "agent-2" {
			t.Fatalf("join from 127.0.0.2: got %+v, %v; want agent-2 joined", resp, err)
		}
		if got := p.tokenChecks.Load(); got != 4 {
			t.Errorf("got %d CheckJoinToken calls, want 4", got)
		}
		if got := joinedFrom(); len(got) != 1 || got[0] != "127.0.0.2" {
			t.Errorf("got joins from %q, want one from 127.0.0.2", got)
		}
	})

	t.Run("refills", func(t *testing.T) {
		const interval = time.Second
		p, joinedFrom := start(t, 1, interval)
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if _, _, err := Join(ctx, p.addr, "wrong", joinReq(t, "agent-1"), trust); !errors.Is(err, ErrJoinRefused) {
			t.Fatalf("first attempt: got %v, want ErrJoinRefused", err)
		}
		start := time.Now()
		attempts := 0
		for {
			attempts++
			_, _, err := Join(ctx, p.addr, goodToken, joinReq(t, "agent-1"), trust)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrJoinRefused) || ctx.Err() != nil {
				t.Fatalf("attempt %d: got %v, want ErrJoinRefused until the bucket refills", attempts, err)
			}
			select {
			case <-ctx.Done():
				t.Fatal("the join limit never refilled")
			case <-time.After(interval / 10):
			}
		}
		if attempts < 2 {
			t.Errorf("joined at the first attempt after the limit was hit, %s later; want refusals until it refills after %s", time.Since(start), interval)
		}
		if got := p.tokenChecks.Load(); got != 2 {
			t.Errorf("got %d CheckJoinToken calls over %d attempts, want 2: the limited ones must not reach it", got, attempts+1)
		}
		if got := joinedFrom(); len(got) != 1 || got[0] != "127.0.0.1" {
			t.Errorf("got joins from %q, want one from 127.0.0.1", got)
		}
	})
}

// TestRenew: a renewal is answered by the handler, after the hello only.
func TestRenew(t *testing.T) {
	a := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a))
	h := &recHandler{}
	c, _ := rawAgent(t, p, agentSigner(t, a, "agent-1"), "agent-1", Trust{CA: a.HostCA.PublicKey()}, h)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	setReply := func(r RenewReply) {
		h.mu.Lock()
		h.renew = r
		h.mu.Unlock()
	}
	const cert = "ssh-ed25519-cert-v01@openssh.com AAAA renewed"
	steps := []struct {
		name      string
		do        func(t *testing.T)
		reply     RenewReply
		wantCert  string
		wantErr   string
		wantCalls int
	}{
		{"before hello: refused", nil, RenewReply{HostCert: cert}, "", "renew before hello", 0},
		{"hello", func(t *testing.T) {
			ok, _, err := sendRequest(ctx, c.conn, ReqHello, encode(Hello{Version: "test"}))
			if err != nil || !ok {
				t.Fatalf("hello: got %v, %v; want accepted", ok, err)
			}
		}, RenewReply{}, "", "", 0},
		{"after hello: delivered", nil, RenewReply{HostCert: cert}, cert, "", 1},
		{"handler refuses", nil, RenewReply{Error: "the agent's renewal grant ended"}, "", "refused: the agent's renewal grant ended", 2},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.do != nil {
				st.do(t)
				return
			}
			setReply(st.reply)
			got, err := c.Renew(ctx)
			switch {
			case st.wantErr == "" && (err != nil || got != st.wantCert):
				t.Errorf("Renew: got %q, %v; want %q", got, err, st.wantCert)
			case st.wantErr != "" && (err == nil || !strings.Contains(err.Error(), st.wantErr) || got != ""):
				t.Errorf("Renew: got %q, %v; want a refusal holding %q", got, err, st.wantErr)
			}
			if n := h.renewCalls(); n != st.wantCalls {
				t.Errorf("got %d handler Renew calls, want %d", n, st.wantCalls)
			}
		})
	}
}

// hostOf is the IP of an address.
func hostOf(a net.Addr) string {
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}
