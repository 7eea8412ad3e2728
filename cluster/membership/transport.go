package membership

import (
	"context"
	"log"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// dialTransport is memberlist's NetTransport with its TCP streams opened
// by Config.Dial.
type dialTransport struct {
	*memberlist.NetTransport
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// newDialTransport binds ip:port for TCP and UDP. Port 0 is retried as
// memberlist does for its own transport: the port the kernel picks for
// TCP may be taken for UDP.
func newDialTransport(ip string, port int, logger *log.Logger, dial func(context.Context, string, string) (net.Conn, error)) (*dialTransport, error) {
	tries := 1
	if port == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var nt *memberlist.NetTransport
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{ip}, BindPort: port, Logger: logger})
		if err == nil {
			return &dialTransport{NetTransport: nt, dial: dial}, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

func (t *dialTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return t.dial(ctx, "tcp", a.Addr)
}

func (t *dialTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}
