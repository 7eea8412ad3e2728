package nodessh

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Keys that the server adds to ssh.Permissions.Extensions of every
// authenticated connection, so that handlers know who is on the other end.
// They overwrite certificate extensions of the same name: a CA cannot spoof
// them.
const (
	// ExtensionKeyID holds the KeyId of the user certificate.
	ExtensionKeyID = "key-id@warren"
	// ExtensionLogin holds the login (SSH user name) the session runs as.
	ExtensionLogin = "login@warren"
)

// ErrServerClosed is returned by Serve and ServeConn after Close was called.
var ErrServerClosed = errors.New("nodessh: server closed")

// Config configures a Server. The zero value is not usable: HostSigners and
// UserCAs are required.
type Config struct {
	// HostSigners are the host keys; normally one signer wrapping the agent's
	// host certificate (ssh.NewCertSigner).
	HostSigners []ssh.Signer
	// UserCAs are the user certificate authorities. Only user certificates
	// signed by one of them are accepted; plain keys never are.
	UserCAs []ssh.PublicKey
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Clock tells the time for certificate validity; nil means time.Now.
	Clock func() time.Time
	// SFTPCommand, when set, is exec'd as the login user to serve the "sftp"
	// subsystem over stdin/stdout, like OpenSSH's Subsystem line. When empty
	// the subsystem is served in-process with github.com/pkg/sftp. That can
	// only act with the agent's own identity, so an agent running as root
	// then refuses sftp (and scp, which uses it) for every login but root.
	SFTPCommand []string
	// Banner is sent to clients before authentication; empty sends none.
	Banner string
	// OnLogin, if set, is called once a user has logged in on conn, with
	// the login and the certificate's key id (for audit records).
	OnLogin func(conn net.Conn, login, keyID string)
	// OnLoginRefused, if set, is called when authentication on conn
	// failed, with the login asked for and the server's reasons (one per
	// key refused), for audit records.
	OnLoginRefused func(conn net.Conn, login string, reasons []string)
	// Authorize, if set, is asked about every certificate that passed the
	// server's own checks, for the connection (as given to ServeConn) it
	// came on and the login it asks for: an error refuses the login, and
	// its text is shown to the user (the cluster's roles decide here).
	Authorize func(conn net.Conn, login string, cert *ssh.Certificate) error
	// AllowForwarding, if set, is asked before every forwarding that the
	// certificate permits (permit-port-forwarding for ForwardLocal and
	// ForwardRemote, permit-agent-forwarding for ForwardAgent): each
	// direct-tcpip channel (ssh -L, -D, -W), each tcpip-forward request
	// (ssh -R) and each auth-agent-req (ssh -A), with the connection (as
	// given to ServeConn), the login and the certificate of the login. An
	// error refuses it; its text reaches the user where the protocol has
	// room for it (see doc.go). nil allows what the certificate permits.
	AllowForwarding func(conn net.Conn, login string, cert *ssh.Certificate, kind string) error
	// Record, if set, is asked for a Recorder when a job starts under a
	// PTY (a shell, or ssh -t with a command), with the connection (as
	// given to ServeConn): see Recorder. An error refuses the job, and
	// its text is shown to the user. A nil Recorder records nothing.
	Record func(conn net.Conn, info RecordInfo) (Recorder, error)
}

// Kinds of forwarding that Config.AllowForwarding is asked about.
const (
	// ForwardLocal is a connection from the node to a host and port the
	// client names: ssh -L, -D and -W (direct-tcpip channels).
	ForwardLocal = "local"
	// ForwardRemote is a listener on the node whose connections go back to
	// the client: ssh -R (tcpip-forward requests).
	ForwardRemote = "remote"
	// ForwardAgent is the client's SSH agent, offered to a session's jobs
	// through a socket on the node: ssh -A (auth-agent-req@openssh.com).
	ForwardAgent = "agent"
)

// Validate reports every problem with c at once. It never modifies c.
func (c Config) Validate() error {
	var errs []error
	if len(c.HostSigners) == 0 {
		errs = append(errs, errors.New("nodessh: Config.HostSigners is empty; give the server at least one host key, normally the agent's host certificate signer"))
	}
	for i, s := range c.HostSigners {
		if s == nil || s.PublicKey() == nil {
			errs = append(errs, fmt.Errorf("nodessh: Config.HostSigners[%d] is nil; remove it or load the host key", i))
		}
	}
	if len(c.UserCAs) == 0 {
		errs = append(errs, errors.New("nodessh: Config.UserCAs is empty; no user could ever log in: set the cluster's user CA public key"))
	}
	for i, ca := range c.UserCAs {
		if ca == nil {
			errs = append(errs, fmt.Errorf("nodessh: Config.UserCAs[%d] is nil; remove it or load the CA key", i))
			continue
		}
		if _, isCert := ca.(*ssh.Certificate); isCert {
			errs = append(errs, fmt.Errorf("nodessh: Config.UserCAs[%d] is a certificate, not a CA key; use the CA's public key", i))
		}
	}
	if len(c.SFTPCommand) > 0 {
		if c.SFTPCommand[0] == "" || !filepath.IsAbs(c.SFTPCommand[0]) {
			errs = append(errs, fmt.Errorf("nodessh: Config.SFTPCommand[0] %q must be an absolute path, since it runs with the login user's PATH", c.SFTPCommand[0]))
		}
		for i, arg := range c.SFTPCommand {
			if strings.IndexByte(arg, 0) >= 0 {
				errs = append(errs, fmt.Errorf("nodessh: Config.SFTPCommand[%d] contains a NUL byte", i))
			}
		}
	}
	return errors.Join(errs...)
}
