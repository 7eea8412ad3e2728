package nodessh

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/ssh"
)

// connection is one authenticated SSH connection.
type connection struct {
	srv          *Server
	sc           *ssh.ServerConn
	log          *slog.Logger
	acct         *account // the login user every session runs as
	forceCommand string   // from the certificate; replaces any requested command
	permitPTY    bool     // the certificate allows PTYs
	sshConn      string   // SSH_CONNECTION for children; "" if unknown

	wg       sync.WaitGroup // the global request loop and every session
	sessions atomic.Int32   // open session channels
	nextID   int            // session ids for logs; used by serve only

	mu   sync.Mutex               // guards open
	open map[ssh.Channel]struct{} // session channels, for tell
}

// tell writes a line to the stderr of every open session (with a PTY the
// client shows it on the terminal too).
func (c *connection) tell(line string) {
	c.mu.Lock()
	chans := make([]ssh.Channel, 0, len(c.open))
	for ch := range c.open {
		chans = append(chans, ch)
	}
	c.mu.Unlock()
	for _, ch := range chans {
		_, _ = ch.Stderr().Write([]byte("\r\n" + line + "\r\n"))
	}
}

func (c *connection) track(ch ssh.Channel, open bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !open {
		delete(c.open, ch)
		return
	}
	if c.open == nil {
		c.open = map[ssh.Channel]struct{}{}
	}
	c.open[ch] = struct{}{}
}

// serve dispatches channels until the transport ends, then waits for every
// session. Channel requests must be answered promptly: x/crypto delivers
// them from the connection's single read loop.
func (c *connection) serve(chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.serveGlobalRequests(reqs)
	}()
	for nc := range chans {
		c.dispatch(nc)
	}
	// The transport is gone; closing makes sure every channel is closed
	// too, so sessions see their request channels end.
	c.sc.Close()
	c.wg.Wait()
}

func (c *connection) dispatch(nc ssh.NewChannel) {
	kind := nc.ChannelType()
	refuse := func(why ssh.RejectionReason, msg string) {
		c.log.Info("ssh channel refused", "type", kind, "reason", msg)
		_ = nc.Reject(why, msg)
	}
	switch kind {
	case "session":
		if c.sessions.Add(1) > maxSessionsPerConn {
			c.sessions.Add(-1)
			refuse(ssh.ResourceShortage, "too many sessions on this connection")
			return
		}
		c.nextID++
		id := c.nextID
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer c.sessions.Add(-1)
			c.serveSession(nc, id)
		}()
	case "direct-tcpip", "direct-streamlocal@openssh.com":
		refuse(ssh.Prohibited, "port forwarding is not allowed on this node")
	case "x11":
		refuse(ssh.Prohibited, "X11 forwarding is not allowed on this node")
	case "auth-agent@openssh.com":
		refuse(ssh.Prohibited, "agent forwarding is not allowed on this node")
	default:
		refuse(ssh.UnknownChannelType, "unsupported channel type "+kind)
	}
}

// serveGlobalRequests refuses every global request: remote forwarding
// (tcpip-forward) is not offered, and OpenSSH's keepalives are content
// with a failure reply.
func (c *connection) serveGlobalRequests(reqs <-chan *ssh.Request) {
	for req := range reqs {
		switch req.Type {
		case "tcpip-forward", "cancel-tcpip-forward", "streamlocal-forward@openssh.com":
			c.log.Info("ssh request refused", "type", req.Type, "reason", "port forwarding is not allowed on this node")
		default:
			c.log.Debug("ssh global request ignored", "type", req.Type)
		}
		if req.WantReply {
			_ = req.Reply(false, nil)
		}
	}
}
