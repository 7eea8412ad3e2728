package revtunnel

import (
	"context"
	"fmt"
	"testing"

	"github.com/warren-proxy/warren/internal/model"
)

// TestPushes: what a proxy pushes to its agents (proxy set, resource
// definitions, roles) reaches the agent's callbacks unchanged.
func TestPushes(t *testing.T) {
	a := newAuthority(t)
	p := startProxy(t, baseServerConfig(t, a))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	proxies := make(chan ProxySet, 1)
	defs := make(chan Definitions, 1)
	policies := make(chan PolicySet, 1)
	type dialed struct {
		c   *ClientConn
		err error
	}
	done := make(chan dialed, 1)
	go func() {
		c, _, err := Dial(ctx, ClientConfig{
			Addr: p.addr, AgentID: "agent-1", Signer: agentSigner(t, a, "agent-1"), Trust: Trust{CA: a.HostCA.PublicKey()},
			OnProxies:     func(s ProxySet) { proxies <- s },
			OnDefinitions: func(d Definitions) { defs <- d },
			OnPolicy:      func(s PolicySet) { policies <- s },
		}, Hello{Version: "test"})
		done <- dialed{c, err}
	}()
	var sc *ServerConn
	select {
	case sc = <-p.conns:
	case d := <-done:
		t.Fatalf("Dial returned before the proxy accepted a tunnel: %v", d.err)
	case <-ctx.Done():
		t.Fatal("no tunnel reached the proxy")
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = sc.Serve(&recHandler{})
	}()
	defer func() {
		sc.Close()
		<-served
	}()
	d := <-done
	if d.err != nil {
		t.Fatalf("Dial: %v", d.err)
	}
	defer d.c.Close()

	wantProxies := ProxySet{Proxies: []ProxyInfo{{ID: proxyID, Region: "eu", TunnelAddr: p.addr}}}
	wantDefs := Definitions{Definitions: []model.Definition{{Name: "web", Kind: model.KindTCP, Addr: "127.0.0.1:8080", Labels: map[string]string{"env": "dev"}}}}
	wantPolicy := PolicySet{Roles: []byte(`[{"name":"dev","allow":{"logins":["ubuntu"]}}]`)}
	if err := sc.SendProxies(wantProxies); err != nil {
		t.Fatal(err)
	}
	if err := sc.SendDefinitions(wantDefs); err != nil {
		t.Fatal(err)
	}
	if err := sc.SendPolicy(wantPolicy); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  func() (any, bool)
		want any
	}{
		{"proxies", func() (any, bool) {
			select {
			case v := <-proxies:
				return v, true
			case <-ctx.Done():
				return nil, false
			}
		}, wantProxies},
		{"definitions", func() (any, bool) {
			select {
			case v := <-defs:
				return v, true
			case <-ctx.Done():
				return nil, false
			}
		}, wantDefs},
		{"policy", func() (any, bool) {
			select {
			case v := <-policies:
				return string(v.Roles), true
			case <-ctx.Done():
				return nil, false
			}
		}, string(wantPolicy.Roles)},
	}
	for _, tt := range tests {
		got, ok := tt.got()
		if !ok {
			t.Fatalf("%s: the agent got nothing", tt.name)
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s: the agent got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
