package nodessh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/warren-proxy/warren/internal/accept"
)

const (
	// permitPortForwardingExtension and permitAgentForwardingExtension
	// are the certificate extensions without which forwarding is refused,
	// as in OpenSSH.
	permitPortForwardingExtension  = "permit-port-forwarding"
	permitAgentForwardingExtension = "permit-agent-forwarding"

	// maxForwardedPerConn bounds the forwarded TCP connections one SSH
	// connection holds at once, in both directions (ssh -L, -D and -W
	// channels, pending dials included, and connections to its ssh -R
	// listeners). A browser behind ssh -D opens a few dozen.
	maxForwardedPerConn = 128
	// maxListenersPerConn bounds the ssh -R listeners of one connection.
	maxListenersPerConn = 16
	// forwardDialTimeout bounds the connect to a direct-tcpip target, so a
	// target that drops packets does not hold a forwarding slot for the
	// kernel's minutes.
	forwardDialTimeout = 10 * time.Second
	// forwardDrainTimeout is how long what the client sent before closing
	// a forwarded channel may take to reach a socket that is not reading.
	forwardDrainTimeout = 5 * time.Second
	// maxForwardHostLen bounds host names in forwarding requests (the DNS
	// limit), so that logs and dials only see sane names.
	maxForwardHostLen = 255
)

// Payloads of the forwarding messages (RFC 4254 section 7).
type (
	// directTCPIPMsg is also the payload of forwarded-tcpip channels, with
	// the listening address and port in Host and Port.
	directTCPIPMsg struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	tcpipForwardMsg struct {
		Addr string
		Port uint32
	}
	tcpipForwardReply struct {
		Port uint32
	}
)

// mayForward says why the connection may not forward kind (ForwardLocal,
// ForwardRemote or ForwardAgent), or nil if it may: the certificate must
// carry the OpenSSH extension, then Config.AllowForwarding (the cluster's
// roles) decides.
func (c *connection) mayForward(kind string) error {
	ext := permitPortForwardingExtension
	if kind == ForwardAgent {
		ext = permitAgentForwardingExtension
	}
	if _, ok := c.sc.Permissions.Extensions[ext]; !ok {
		return fmt.Errorf("the certificate lacks the %s extension", ext)
	}
	if allow := c.srv.cfg.AllowForwarding; allow != nil {
		if err := allow(c.nc, c.sc.User(), c.cert, kind); err != nil {
			return err
		}
	}
	return nil
}

// forwardHostProblem says why host is no name to dial or log, or "" if it
// is one.
func forwardHostProblem(host string) string {
	if host == "" {
		return "empty host"
	}
	if len(host) > maxForwardHostLen {
		return "host name too long"
	}
	for i := 0; i < len(host); i++ {
		if host[i] <= ' ' || host[i] >= 0x7f {
			return "host name has spaces, control or non-ASCII characters"
		}
	}
	return ""
}

// forwardLocal serves one direct-tcpip channel (ssh -L, -D, -W): the node
// dials the target and the channel carries the connection. The dial comes
// before the channel is accepted, so that a failure reaches the client as
// the channel's open failure, with its reason, as sshd does.
func (c *connection) forwardLocal(nc ssh.NewChannel) {
	var m directTCPIPMsg
	if err := ssh.Unmarshal(nc.ExtraData(), &m); err != nil {
		c.log.Info("malformed direct-tcpip request", "err", err)
		_ = nc.Reject(ssh.ConnectionFailed, "malformed direct-tcpip request")
		return
	}
	if p := forwardHostProblem(m.Host); p != "" || m.Port == 0 || m.Port > 65535 || len(m.OrigHost) > maxForwardHostLen {
		if p == "" {
			p = "bad port or originator"
		}
		c.log.Info("ssh channel refused", "type", "direct-tcpip", "reason", p)
		_ = nc.Reject(ssh.ConnectionFailed, "bad forwarding target: "+p)
		return
	}
	target := net.JoinHostPort(m.Host, strconv.FormatUint(uint64(m.Port), 10))
	log := c.log.With("type", "direct-tcpip", "target", target, "originator", net.JoinHostPort(m.OrigHost, strconv.FormatUint(uint64(m.OrigPort), 10)))
	if err := c.mayForward(ForwardLocal); err != nil {
		log.Info("ssh channel refused", "reason", err)
		_ = nc.Reject(ssh.Prohibited, "port forwarding is not allowed: "+err.Error())
		return
	}
	d := net.Dialer{Timeout: forwardDialTimeout}
	sock, err := d.DialContext(c.ctx, "tcp", target)
	if err != nil {
		log.Info("port forwarding: connect failed", "err", err)
		_ = nc.Reject(ssh.ConnectionFailed, fmt.Sprintf("connect to %s failed: %v", target, dialReason(err)))
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		sock.Close()
		log.Debug("accept direct-tcpip channel", "err", err)
		return
	}
	log.Info("port forwarding opened", "kind", ForwardLocal)
	pipe(ch, reqs, sock)
	log.Debug("port forwarding closed")
}

// dialReason is the part of a dial error worth showing a user: "connection
// refused" rather than the whole "dial tcp ...: connect: connection
// refused" that repeats the target.
func dialReason(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	var sys *os.SyscallError
	if errors.As(err, &sys) && sys.Err != nil {
		err = sys.Err
	}
	return err
}

// pipe copies between a forwarded channel and its socket, each direction
// closing the other side's write half at its end, until both directions
// ended or the channel was closed (by the client, or with the whole
// connection: x/crypto then closes reqs), and closes both.
func pipe(ch ssh.Channel, reqs <-chan *ssh.Request, sock net.Conn) {
	var copies sync.WaitGroup
	copies.Add(2)
	go func() {
		defer copies.Done()
		_, _ = io.Copy(sock, ch)
		closeWrite(sock)
	}()
	go func() {
		defer copies.Done()
		_, _ = io.Copy(ch, sock)
		_ = ch.CloseWrite()
	}()
	copied := make(chan struct{})
	go func() {
		copies.Wait()
		// Both ways are done: close our side; the client answers with its
		// close, which ends reqs.
		_ = ch.Close()
		close(copied)
	}()
	for req := range reqs {
		if req.WantReply {
			_ = req.Reply(false, nil)
		}
	}
	// The channel is closed. Nothing can reach the client any more, so
	// the socket's reader stops now; what the client sent may still be on
	// its way to the socket, for a bounded while.
	_ = sock.SetReadDeadline(time.Now())
	_ = sock.SetWriteDeadline(time.Now().Add(forwardDrainTimeout))
	<-copied
	sock.Close()
}

// closeWrite half-closes sock, so its peer sees EOF while its replies can
// still come back. TCP and Unix sockets can; anything else is closed.
func closeWrite(sock net.Conn) {
	if cw, ok := sock.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = sock.Close()
}

// forwardKey names an ssh -R listener as the client does: by the address
// it asked for and the port (the one the server chose, if it asked for 0).
type forwardKey struct {
	addr string
	port uint32
}

// remoteListener is one ssh -R listener.
type remoteListener struct {
	ln   net.Listener
	stop func() bool // unregisters the close on the connection's end
}

// remoteBindHost is where the server listens for a client's tcpip-forward.
// Always loopback, as sshd's default GatewayPorts=no does (it ignores the
// address the client asks for): a listener on the node's other addresses
// would let anyone on the node's networks in through the user's
// forwarding, past the cluster's access checks. A client naming a
// loopback address gets that one; any other address, a wildcard ("", "*",
// "0.0.0.0", "::") or "localhost" gets 127.0.0.1.
func remoteBindHost(requested string) string {
	if ip := net.ParseIP(requested); ip != nil && ip.IsLoopback() {
		return ip.String()
	}
	return "127.0.0.1"
}

// onTCPIPForward serves a tcpip-forward request (ssh -R): it listens on the
// node and opens a forwarded-tcpip channel back to the client for every
// connection. For port 0 the reply carries the port the kernel chose, as
// RFC 4254 section 7.1 says; the client then cancels with that port.
func (c *connection) onTCPIPForward(payload []byte) (bool, []byte) {
	var m tcpipForwardMsg
	if err := ssh.Unmarshal(payload, &m); err != nil {
		c.log.Info("malformed tcpip-forward request", "err", err)
		return false, nil
	}
	if len(m.Addr) > maxForwardHostLen || m.Port > 65535 {
		// Not logged whole: the address is the client's, of any length.
		c.log.Info("ssh request refused", "type", "tcpip-forward", "reason", "bad listen address or port")
		return false, nil
	}
	log := c.log.With("type", "tcpip-forward", "requested", net.JoinHostPort(m.Addr, strconv.FormatUint(uint64(m.Port), 10)))
	refuse := func(reason any) (bool, []byte) {
		log.Info("ssh request refused", "reason", reason)
		return false, nil
	}
	if err := c.mayForward(ForwardRemote); err != nil {
		return refuse(fmt.Errorf("port forwarding is not allowed: %w", err))
	}
	// As sshd: binding a privileged port is root's, and the agent may be
	// root on behalf of someone who is not.
	if m.Port != 0 && m.Port < 1024 && c.acct.uid != 0 {
		return refuse("only root may listen on ports below 1024")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.listeners) >= maxListenersPerConn {
		return refuse(fmt.Sprintf("already %d listeners on this connection", maxListenersPerConn))
	}
	if c.ctx.Err() != nil {
		return refuse("connection is closing")
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(remoteBindHost(m.Addr), strconv.FormatUint(uint64(m.Port), 10)))
	if err != nil {
		return refuse(err)
	}
	port := uint32(ln.Addr().(*net.TCPAddr).Port)
	key := forwardKey{addr: m.Addr, port: port}
	if _, dup := c.listeners[key]; dup {
		ln.Close()
		return refuse("already forwarded")
	}
	if c.listeners == nil {
		c.listeners = map[forwardKey]*remoteListener{}
	}
	rl := &remoteListener{ln: ln, stop: context.AfterFunc(c.ctx, func() { ln.Close() })}
	c.listeners[key] = rl
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.acceptForwarded(key, rl)
	}()
	log.Info("port forwarding opened", "kind", ForwardRemote, "listen", ln.Addr().String())
	if m.Port == 0 {
		return true, ssh.Marshal(tcpipForwardReply{Port: port})
	}
	return true, nil
}

// onCancelTCPIPForward closes the listener the client names. Connections
// it accepted before stay up, as with sshd.
func (c *connection) onCancelTCPIPForward(payload []byte) bool {
	var m tcpipForwardMsg
	if err := ssh.Unmarshal(payload, &m); err != nil {
		c.log.Info("malformed cancel-tcpip-forward request", "err", err)
		return false
	}
	key := forwardKey{addr: m.Addr, port: m.Port}
	c.mu.Lock()
	rl, ok := c.listeners[key]
	// Forgotten now, not when the accept loop ends, so that the client
	// may forward the same port again at once.
	delete(c.listeners, key)
	c.mu.Unlock()
	if !ok {
		addr := m.Addr
		if len(addr) > maxForwardHostLen {
			addr = addr[:maxForwardHostLen]
		}
		c.log.Info("ssh request refused", "type", "cancel-tcpip-forward", "addr", addr, "port", m.Port, "reason", "no such forwarding")
		return false
	}
	rl.ln.Close() // acceptForwarded logs the end
	return true
}

// acceptForwarded accepts connections on an ssh -R listener until it is
// closed (cancelled, or with the connection), then forgets it.
func (c *connection) acceptForwarded(key forwardKey, rl *remoteListener) {
	defer func() {
		rl.stop()
		rl.ln.Close()
		c.mu.Lock()
		if c.listeners[key] == rl {
			delete(c.listeners, key)
		}
		c.mu.Unlock()
		c.log.Info("port forwarding closed", "kind", ForwardRemote, "listen", rl.ln.Addr().String())
	}()
	var backoff accept.Backoff
	for {
		sock, err := rl.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || !accept.Temporary(err) {
				if !errors.Is(err, net.ErrClosed) {
					c.log.Warn("port forwarding: accept failed; closing the listener", "listen", rl.ln.Addr().String(), "err", err)
				}
				return
			}
			// Out of file descriptors and the like: back off rather than spin.
			accept.Sleep(backoff.Next(), c.ctx.Done())
			continue
		}
		backoff.Reset()
		if c.forwarded.Add(1) > maxForwardedPerConn {
			c.forwarded.Add(-1)
			// Debug: anyone on the node can connect, and must not flood
			// the log.
			c.log.Debug("port forwarding: connection dropped", "listen", rl.ln.Addr().String(), "reason", "too many forwarded connections on this connection")
			sock.Close()
			continue
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer c.forwarded.Add(-1)
			c.forwardRemote(key, sock)
		}()
	}
}

// forwardRemote opens a forwarded-tcpip channel for a connection to an
// ssh -R listener. The channel names the listener by the address the
// client asked for: OpenSSH's client matches it against its own list.
func (c *connection) forwardRemote(key forwardKey, sock net.Conn) {
	var origHost string
	var origPort uint32
	if a, ok := sock.RemoteAddr().(*net.TCPAddr); ok {
		origHost, origPort = a.IP.String(), uint32(a.Port)
	}
	ch, reqs, err := c.sc.OpenChannel("forwarded-tcpip", ssh.Marshal(directTCPIPMsg{
		Host: key.addr, Port: key.port, OrigHost: origHost, OrigPort: origPort,
	}))
	if err != nil {
		c.log.Info("port forwarding: client refused the connection", "listen", net.JoinHostPort(key.addr, strconv.FormatUint(uint64(key.port), 10)), "err", err)
		sock.Close()
		return
	}
	c.log.Debug("port forwarding: connection forwarded", "listen", sock.LocalAddr().String(), "originator", sock.RemoteAddr().String())
	pipe(ch, reqs, sock)
}
