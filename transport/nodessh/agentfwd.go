package nodessh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/warren-proxy/warren/internal/accept"
)

const (
	// agentSocketBase is where agent socket directories are made, as sshd
	// does (/tmp/ssh-XXXXXXXXXX/agent.<pid>): a place every login can
	// reach, unlike the agent's own TMPDIR, which may be private to it.
	agentSocketBase = "/tmp"
	// maxAgentConnsPerConn bounds the connections to a forwarded agent's
	// socket open at once; each ssh-add or ssh run on the node holds one.
	maxAgentConnsPerConn = 16
)

// agentSocket returns the connection's agent socket, making it on first
// use: one per connection, as sshd has, whichever sessions ask. It lies in
// a new directory of its own (mode 0700) and is made before the directory
// is handed to the login user, so nobody else ever reaches it: the server
// may run as root and serve other logins on the same node. Every
// connection to it opens an auth-agent@openssh.com channel to the client.
// The connection's end closes the socket and removes the directory (see
// serve).
func (c *connection) agentSocket() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agentPath != "" {
		return c.agentPath, nil
	}
	if c.ctx.Err() != nil {
		return "", errors.New("connection is closing")
	}
	dir, err := os.MkdirTemp(agentSocketBase, "warren-agent-")
	if err != nil {
		return "", fmt.Errorf("make agent socket directory: %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("agent.%d", os.Getpid()))
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("listen on agent socket: %w", err)
	}
	fail := func(err error) (string, error) {
		ln.Close()
		os.RemoveAll(dir)
		return "", err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fail(fmt.Errorf("chmod agent socket: %w", err))
	}
	if c.srv.root {
		// The socket first, while the directory is still ours alone.
		uid, gid := int(c.acct.uid), int(c.acct.gid)
		if err := os.Lchown(path, uid, gid); err != nil {
			return fail(fmt.Errorf("chown agent socket to %s: %w", c.acct.name, err))
		}
		if err := os.Lchown(dir, uid, gid); err != nil {
			return fail(fmt.Errorf("chown agent socket directory to %s: %w", c.acct.name, err))
		}
	}
	c.agentDir, c.agentPath = dir, path
	stop := context.AfterFunc(c.ctx, func() { ln.Close() })
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer stop()
		c.serveAgentSocket(ln)
	}()
	c.log.Info("agent forwarding opened", "kind", ForwardAgent, "socket", path)
	return path, nil
}

// serveAgentSocket accepts connections on the agent socket until it is
// closed, and carries each over an auth-agent@openssh.com channel.
func (c *connection) serveAgentSocket(ln *net.UnixListener) {
	defer ln.Close()
	var backoff accept.Backoff
	for {
		sock, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || !accept.Temporary(err) {
				if !errors.Is(err, net.ErrClosed) {
					c.log.Warn("agent forwarding: accept failed; closing the socket", "err", err)
				}
				return
			}
			accept.Sleep(backoff.Next(), c.ctx.Done())
			continue
		}
		backoff.Reset()
		if c.agentConns.Add(1) > maxAgentConnsPerConn {
			c.agentConns.Add(-1)
			c.log.Debug("agent forwarding: connection dropped", "reason", "too many agent connections on this connection")
			sock.Close()
			continue
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer c.agentConns.Add(-1)
			ch, reqs, err := c.sc.OpenChannel("auth-agent@openssh.com", nil)
			if err != nil {
				c.log.Info("agent forwarding: client refused the connection", "err", err)
				sock.Close()
				return
			}
			pipe(ch, reqs, sock)
		}()
	}
}
