package nodessh

import (
	"context"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/ssh"
)

// connection is one authenticated SSH connection.
type connection struct {
	srv          *Server
	sc           *ssh.ServerConn
	nc           net.Conn         // as given to ServeConn, for the Config hooks
	cert         *ssh.Certificate // the login's certificate
	log          *slog.Logger
	acct         *account // the login user every session runs as
	forceCommand string   // from the certificate; replaces any requested command
	permitPTY    bool     // the certificate allows PTYs
	sshConn      string   // SSH_CONNECTION for children; "" if unknown
	sshClient    string   // SSH_CLIENT for children; "" if unknown

	// ctx ends when the transport does (or ServeConn's ctx): forwarding
	// dials and listeners watch it.
	ctx    context.Context
	cancel context.CancelFunc

	wg         sync.WaitGroup // the global request loop, every session and every forwarding goroutine
	sessions   atomic.Int32   // open session channels
	forwarded  atomic.Int32   // forwarded TCP connections (ssh -L, -D, -W, -R), dials included
	agentConns atomic.Int32   // connections to the forwarded agent's socket
	nextID     int            // session ids for logs; used by serve only

	mu        sync.Mutex                     // guards open, listeners, agentDir, agentPath
	open      map[ssh.Channel]struct{}       // session channels, for tell
	listeners map[forwardKey]*remoteListener // ssh -R listeners
	agentDir  string                         // private directory of the agent socket; "" until asked for
	agentPath string                         // the agent socket, SSH_AUTH_SOCK
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
	// too, so sessions and forwarded connections see their request
	// channels end. Cancelling closes the forwarding listeners and the
	// agent socket and ends pending dials.
	c.sc.Close()
	c.cancel()
	c.wg.Wait()
	c.mu.Lock()
	dir := c.agentDir
	c.mu.Unlock()
	if dir != "" {
		// The directory belongs to the login user, who may have put
		// anything there; RemoveAll does not follow symbolic links.
		if err := os.RemoveAll(dir); err != nil {
			c.log.Warn("remove agent socket directory", "dir", dir, "err", err)
		}
	}
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
	case "direct-tcpip":
		if c.forwarded.Add(1) > maxForwardedPerConn {
			c.forwarded.Add(-1)
			refuse(ssh.ResourceShortage, "too many forwarded connections on this connection")
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer c.forwarded.Add(-1)
			c.forwardLocal(nc)
		}()
	case "direct-streamlocal@openssh.com":
		// Unix sockets are opened with the agent's identity, which may be
		// root: file permissions on the socket would not protect it.
		refuse(ssh.Prohibited, "Unix socket forwarding is not offered on this node")
	case "x11":
		refuse(ssh.Prohibited, "X11 forwarding is not allowed on this node")
	case "auth-agent@openssh.com":
		refuse(ssh.Prohibited, "agent forwarding is not allowed on this node")
	default:
		refuse(ssh.UnknownChannelType, "unsupported channel type "+kind)
	}
}

// serveGlobalRequests serves remote forwarding (tcpip-forward and its
// cancel) and refuses every other global request; OpenSSH's keepalives
// are content with a failure reply. A global reply has no room for a
// reason: refusals are logged, and OpenSSH's client warns its user by
// itself ("remote port forwarding failed for listen port").
func (c *connection) serveGlobalRequests(reqs <-chan *ssh.Request) {
	for req := range reqs {
		ok, reply := false, []byte(nil)
		switch req.Type {
		case "tcpip-forward":
			ok, reply = c.onTCPIPForward(req.Payload)
		case "cancel-tcpip-forward":
			ok = c.onCancelTCPIPForward(req.Payload)
		case "streamlocal-forward@openssh.com", "cancel-streamlocal-forward@openssh.com":
			c.log.Info("ssh request refused", "type", req.Type, "reason", "Unix socket forwarding is not offered on this node")
		default:
			c.log.Debug("ssh global request ignored", "type", req.Type)
		}
		if req.WantReply {
			_ = req.Reply(ok, reply)
		}
	}
}
