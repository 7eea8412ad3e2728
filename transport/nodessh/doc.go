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
//	  |--- publickey auth (user cert) --------->|  signed by one of UserCAs, valid at
//	  |                                         |  Clock(), login in ValidPrincipals,
//	  |                                         |  login allowed for this process
//	  |--- channel "session" ------------------>|  anything else (direct-tcpip, x11,
//	  |                                         |  agent) is refused with a reason
//	  |--- env, pty-req, window-change -------->|  recorded until the job starts
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
// # Lifetime
//
// Every goroutine has an owner that waits for it: a session waits for its
// copiers and its child, a connection for its sessions, and Server.Close for
// every connection. A child whose channel goes away before it exits (the
// client left, the connection broke, ctx ended or Close was called) has its
// process group sent SIGHUP, then SIGKILL if it is still there two seconds
// later.
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
