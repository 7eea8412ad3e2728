package session

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/warren-proxy/warren/transport/streams"
)

// byteCounter is an Observer that counts bytes into two Prometheus
// counters, as the proxy's metrics do.
type byteCounter struct {
	nopObserver
	up, down prometheus.Counter
}

func (c byteCounter) Moved(up, down int64) {
	if up > 0 {
		c.up.Add(float64(up))
	}
	if down > 0 {
		c.down.Add(float64(down))
	}
}

// tcpPair is two ends of a loopback TCP connection.
func tcpPair(tb testing.TB) (a, b *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	s := <-acc
	if s == nil {
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestCountedCountsBothWaysAndHalfCloses: what flows through the agent's
// side of a pipe is counted up (written to the agent) and down (read from
// it), and a half-close still reaches the agent.
func TestCountedCountsBothWaysAndHalfCloses(t *testing.T) {
	reg := prometheus.NewRegistry()
	obs := byteCounter{up: prometheus.NewCounter(prometheus.CounterOpts{Name: "up_bytes_total", Help: "up"}),
		down: prometheus.NewCounter(prometheus.CounterOpts{Name: "down_bytes_total", Help: "down"})}
	reg.MustRegister(obs.up, obs.down)
	userApp, userSide := tcpPair(t)
	agentSide, agentApp := tcpPair(t)
	res := make(chan streams.Result, 1)
	go func() { res <- streams.Pipe(userSide, counted{agentSide, obs}) }()
	if _, err := userApp.Write(make([]byte, 3000)); err != nil {
		t.Fatal(err)
	}
	userApp.CloseWrite()
	got, err := io.ReadAll(agentApp) // ends only if the half-close came through
	if err != nil || len(got) != 3000 {
		t.Fatalf("agent read %d bytes, %v", len(got), err)
	}
	agentApp.Write(make([]byte, 700))
	agentApp.CloseWrite()
	if b, _ := io.ReadAll(userApp); len(b) != 700 {
		t.Fatalf("user read %d bytes", len(b))
	}
	select {
	case r := <-res:
		if r.AtoB != 3000 || r.BtoA != 700 {
			t.Errorf("pipe result %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the pipe did not end")
	}
	if up, down := counterValue(t, obs.up), counterValue(t, obs.down); up != 3000 || down != 700 {
		t.Errorf("counted up %v down %v; want 3000 and 700", up, down)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.Counter.GetValue()
}

// BenchmarkPipeCounted is the cost of counting a session's bytes as they
// flow: Pipe between loopback TCP connections, one way, with the agent's
// side plain and counted into Prometheus counters.
func BenchmarkPipeCounted(b *testing.B) {
	for _, count := range []bool{false, true} {
		name := "plain"
		if count {
			name = "counted"
		}
		b.Run(name, func(b *testing.B) {
			const chunk = 64 << 10
			userApp, userSide := tcpPair(b)
			agentSide, agentApp := tcpPair(b)
			var agent streams.Stream = agentSide
			if count {
				agent = counted{agentSide, byteCounter{up: prometheus.NewCounter(prometheus.CounterOpts{Name: "u", Help: "u"}),
					down: prometheus.NewCounter(prometheus.CounterOpts{Name: "d", Help: "d"})}}
			}
			go streams.Pipe(userSide, agent)
			data := make([]byte, chunk)
			b.SetBytes(chunk)
			b.ResetTimer()
			go func() {
				for range b.N {
					if _, err := userApp.Write(data); err != nil {
						return
					}
				}
				userApp.CloseWrite()
			}()
			n, err := io.Copy(io.Discard, agentApp)
			b.StopTimer()
			if err != nil || n != int64(b.N)*chunk {
				b.Fatalf("read %d bytes, %v", n, err)
			}
		})
	}
}
