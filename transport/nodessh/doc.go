// Package nodessh is the SSH server that a Warren agent embeds to serve the
// private host it runs beside.
//
// The agent does not listen: a proxy opens a channel on the agent's reverse
// tunnel and the agent hands that channel, wrapped as a net.Conn, to
// Server.ServeConn. Everything after that is plain SSH, so the stock OpenSSH
// ssh, scp, sftp, rsync and git clients work end to end.
//
// # Protocol flow
//
//	client                                   nodessh.Server
//	  |--- SSH handshake (host cert) ---------->|  HostSigners; clients trust them
//	  |                                         |  with one @cert-authority line
//	  |--- publickey auth (user cert) --------->|  pki.CheckUserCert: one of UserCAs,
//	  |                                         |  valid at Clock(), login a principal,
//	  |                                         |  source-address honoured;
//	  |                                         |  login allowed for this process
//	  |--- channel "session" ------------------>|  x11 and Unix socket channels are
//	  |                                         |  refused with a reason
//	  |--- direct-tcpip, tcpip-forward -------->|  see Forwarding
//	  |--- env, pty-req, auth-agent-req ------->|  recorded until the job starts
//	  |--- exec | shell | subsystem sftp ------>|  job starts as the login user
//	  |<== stdout/stderr (or PTY) data ========>|  stdin EOF closes the child's stdin
//	  |--- signal, window-change -------------->|  delivered to the job's process group
//	  |--- eow@openssh.com -------------------->|  the client reads no more output: the
//	  |                                         |  job's stdout is closed, a PTY hung up
//	  |<-- EOF, exit-status|exit-signal, close -|  after all output has been sent
//
// # Logins
//
// When the agent runs as root, a session runs as the login user (the SSH user
// name, which must also be a principal of the certificate): credentials,
// supplementary groups, HOME, USER, LOGNAME, SHELL and PATH come from the
// passwd entry. When it does not run as root it cannot change identity, so the
// only login it accepts is its own user name.
//
// # Environment
//
// A job's environment is the login's (HOME, USER, LOGNAME, SHELL, PATH),
// the client's "env" requests (SendEnv, SetEnv) except names that load
// code or override the login (LD_*, BASH_ENV, PATH, SSH_*, ...; see
// env.go), then SSH_CONNECTION and SSH_CLIENT, from the conn's addresses
// when both are TCP addresses (the agent's conn reports the user's client
// as the proxy saw it), SSH_AUTH_SOCK with agent forwarding, SSH_TTY and
// TERM with a PTY. Like sshd, a session takes up to 128 variables; each
// may be up to 128 KiB and all of them 256 KiB (execve's own limits
// are near). OpenSSH sends them without asking for a reply, so those
// refused for the limits are logged and named on the session's stderr
// when the job starts ("warren: 2 environment variables not set ...").
//
// # Forwarding
//
// A certificate with permit-port-forwarding, for which
// Config.AllowForwarding (the cluster's roles) does not object, may:
//
//   - open direct-tcpip channels (ssh -L, -D, -W): the node dials the
//     target, as the node (so `ssh -L 5432:localhost:5432 node1` reaches
//     the node's own loopback), within 10 s. A refusal, or a connect
//     that failed, is the channel's open failure; OpenSSH shows its
//     message ("channel 2: open failed: administratively prohibited:
//     port forwarding is not allowed: ...").
//   - ask for tcpip-forward (ssh -R): the server listens on the node's
//     loopback only, whatever address the client names, as sshd's
//     default GatewayPorts=no does: a listener on the node's other
//     addresses would let anyone on its networks in, past the cluster's
//     checks. For port 0 the reply carries the chosen port. Ports below
//     1024 are for root logins only. Each connection to the listener is a
//     forwarded-tcpip channel back to the client; cancel-tcpip-forward
//     closes the listener, the connection's end closes them all. A global
//     request's failure has no room for a reason: it is logged, and
//     OpenSSH warns its user by itself.
//
// A certificate with permit-agent-forwarding, for which AllowForwarding
// does not object, may send auth-agent-req@openssh.com (ssh -A) on a
// session: its job gets SSH_AUTH_SOCK, a socket (0600) in a new directory
// (0700) under /tmp, both owned by the login, so that no other login on
// the node reaches it although the server may run as root. There is one
// per connection, as with sshd; each connection to it is an
// auth-agent@openssh.com channel to the client; the connection's end
// removes it. OpenSSH asks without wanting a reply, so a refusal is also
// told on the session's stderr ("warren: agent forwarding is not allowed:
// ...").
//
// Unix socket forwarding (direct-streamlocal, streamlocal-forward) is not
// offered: the server would open sockets with its own identity, which may
// be root. Nor is X11.
//
// Per connection: 32 sessions, 128 forwarded TCP connections (both ways,
// dials included), 16 ssh -R listeners, 16 connections to the agent
// socket; a dial waits 10 s at most.
//
// # SFTP
//
// The sftp subsystem is github.com/pkg/sftp's server behind a filter (see
// serveSFTP) that adds what OpenSSH's sftp uses and the library lacks:
// copy-data (cp), fsync@openssh.com (put -f), limits@openssh.com (reads
// and writes of 255 KiB) and users-groups-by-id@openssh.com (names in
// ls -l). The library serves posix-rename, statvfs and hardlink itself.
//
// # Recording
//
// With Config.Record set, every job that runs under a PTY (a shell, or
// ssh -t with a command) is offered to a Recorder before it starts: the
// terminal's output, as read from the PTY and before the client gets it,
// what the user typed, and every window-change. Jobs without a PTY (scp,
// sftp, plain exec) are not recorded. The hook decides what it keeps and
// whether a failure matters: an error it returns ends the session with
// the error's text on the user's terminal (before the job, the exec or
// shell request is accepted, told and ended with status 1, since OpenSSH
// drops a failed request's stderr).
//
// # Lifetime
//
// Every goroutine has an owner that waits for it: a session waits for its
// copiers and its child, a connection for its sessions and forwardings,
// and Server.Close for every connection. A child whose channel goes away
// before it exits (the client left, the connection broke, ctx ended or
// Close was called) has its process group sent SIGHUP, then SIGKILL if it
// is still there two seconds later.
//
// A client that can no longer show the output (OpenSSH sends
// eow@openssh.com once writing to its stdout failed, as in
// `ssh node yes | head -1`) does not leave the job running unread: as with
// sshd, the job's stdout pipe is closed, so its next write there gets
// SIGPIPE, and its end is reported as usual; stderr is still drained but
// no longer sent. Under a PTY the terminal is hung up instead (see
// session.onEOW for where this differs from sshd). OpenSSH's client sends
// eow only to servers whose version starts with "OpenSSH", hence the
// server's "SSH-2.0-OpenSSH_Warren".
package nodessh
