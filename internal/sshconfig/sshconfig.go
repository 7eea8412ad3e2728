// Package sshconfig renders the ssh_config block that lets stock OpenSSH
// reach Warren resources: entries that reach a proxy (certificate,
// known_hosts with the cluster's proxy host CA) — one proxy by address, or
// any through a ProxyCommand (`warren connect`) — and the ssh resources
// behind a ProxyJump (a known_hosts with the agent host CA). The two known_hosts files keep the
// two CAs apart: a certificate an agent holds is never accepted for a
// proxy, nor a proxy's for a resource.
//
// The block is fenced by BEGIN and END comment lines naming the first
// proxy, so Update can replace it in a file (~/.ssh/config) however often
// it runs: the file gains no duplicate, and a block written before is
// brought up to date.
package sshconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/warren-proxy/warren/internal/atomicfile"
)

// Proxy is one entry that reaches a proxy: at Addr, or, when Command is
// set, through that ProxyCommand (`warren connect`, which picks a proxy
// per connection). An entry whose proxy is not known in advance needs
// HostKeyAlias: a principal every proxy's host certificate carries.
type Proxy struct {
	Name, Addr   string
	Command      string
	HostKeyAlias string
}

// Host and Port split Addr.
func (p Proxy) Host() string { h, _, _ := net.SplitHostPort(p.Addr); return h }
func (p Proxy) Port() string { _, port, _ := net.SplitHostPort(p.Addr); return port }

// TCP is a tcp resource: not an SSH host, reached with ssh -L or ssh -W.
type TCP struct {
	Name string
	Port int // the resource's port, 0 if unknown
}

// Config is what an ssh_config block for Warren needs.
type Config struct {
	Proxies  []Proxy
	User     string // Warren user name, for the proxies
	Login    string // default login on resources
	Identity string
	// KnownHosts trusts the proxy host CA (proxies only);
	// ResourceKnownHosts trusts the agent host CA (resources only).
	KnownHosts         string
	ResourceKnownHosts string
	// Hosts are the ssh resources, reached through Jump.
	Hosts []string
	// Jump is the entry the resources are reached through (ProxyJump);
	// empty means the first proxy.
	Jump string
	// TCP are the tcp resources, listed in comments with how to reach them.
	TCP []TCP
}

// LocalPort is the port a tcp hint forwards from: the resource's own when
// it is known and not privileged, else a high one.
func (t TCP) LocalPort() int {
	if t.Port >= 1024 {
		return t.Port
	}
	if t.Port > 0 {
		return 10000 + t.Port
	}
	return 15000
}

// RemotePort is the port in hints (the agent forwards to the resource's
// address whatever port is asked; 22 when unknown).
func (t TCP) RemotePort() int {
	if t.Port > 0 {
		return t.Port
	}
	return 22
}

var tmpl = template.Must(template.New("ssh_config").Parse(`{{.Begin}}
# Written by warren; resources are reached through {{.Via}}.
{{range .Proxies}}Host {{.Name}}
{{- if .Command}}
    ProxyCommand {{.Command}}
    HostKeyAlias {{.HostKeyAlias}}
{{- else}}
    HostName {{.Host}}
    Port {{.Port}}
{{- end}}
    User {{$.User}}
    IdentityFile {{$.Identity}}
    CertificateFile {{$.Identity}}-cert.pub
    IdentitiesOnly yes
    UserKnownHostsFile {{$.KnownHosts}}
    StrictHostKeyChecking yes
{{end}}{{if .Hosts}}
Host{{range .Hosts}} {{.}}{{end}}
    ProxyJump {{.Via}}
    User {{.Login}}
    IdentityFile {{.Identity}}
    CertificateFile {{.Identity}}-cert.pub
    IdentitiesOnly yes
    UserKnownHostsFile {{.ResourceKnownHosts}}
    StrictHostKeyChecking yes
{{end}}{{range .TCP}}# tcp resource {{.Name}}: ssh -N -L {{.LocalPort}}:{{.Name}}:{{.RemotePort}} {{$.Via}}   (or ssh -W {{.Name}}:{{.RemotePort}} {{$.Via}})
{{end}}{{.End}}
`))

type view struct {
	Config
	Begin, End string
	Via        string // the entry resources are reached through
}

// markers are the fence lines of the block for c's first proxy.
func markers(c Config) (begin, end string) {
	name := "warren"
	if len(c.Proxies) > 0 {
		name = c.Proxies[0].Name
	}
	return "# BEGIN warren " + name, "# END warren " + name
}

// Write renders c as ssh_config text.
func Write(w io.Writer, c Config) error {
	if len(c.Proxies) == 0 {
		return errors.New("ssh_config: no proxy to write")
	}
	if err := c.check(); err != nil {
		return err
	}
	begin, end := markers(c)
	via := c.Jump
	if via == "" {
		via = c.Proxies[0].Name
	}
	return tmpl.Execute(w, view{Config: c, Begin: begin, End: end, Via: via})
}

// check reports what would make the block wrong: two Hosts of one name
// (ssh would take the first and silently ignore the other), a Jump that
// is no entry, an entry through a command without its alias.
func (c Config) check() error {
	var errs []error
	seen := map[string]bool{}
	for _, h := range c.Hosts {
		seen[h] = true
	}
	jumpFound := c.Jump == ""
	for _, p := range c.Proxies {
		if seen[p.Name] {
			errs = append(errs, fmt.Errorf("ssh_config: two Hosts named %s (rename the entry, e.g. with --proxy-name)", p.Name))
		}
		seen[p.Name] = true
		jumpFound = jumpFound || p.Name == c.Jump
		if p.Command != "" && p.HostKeyAlias == "" {
			errs = append(errs, fmt.Errorf("ssh_config: entry %s runs a ProxyCommand but has no HostKeyAlias", p.Name))
		}
	}
	if !jumpFound {
		errs = append(errs, fmt.Errorf("ssh_config: the resources jump through %s, which is no entry", c.Jump))
	}
	return errors.Join(errs...)
}

// Command renders args as a ProxyCommand line: ssh runs it with the
// shell, after expanding %-tokens, so '%' is doubled and any argument
// with a character the shell treats specially is single-quoted.
func Command(args ...string) string {
	out := make([]string, len(args))
	for i, a := range args {
		a = strings.ReplaceAll(a, "%", "%%")
		if a == "" || strings.ContainsFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@,+%", r))
		}) {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// Update writes c's block into the file at path: in place of the block
// for the same proxy if the file has one, else at its end. The file is
// replaced atomically and keeps its mode (0600 when new, as ssh wants).
func Update(path string, c Config) error {
	var block bytes.Buffer
	if err := Write(&block, c); err != nil {
		return err
	}
	old, err := os.ReadFile(path)
	mode := fs.FileMode(0o600)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("read %s: %w", path, err)
	default:
		if fi, err := os.Stat(path); err == nil {
			mode = fi.Mode().Perm()
		}
	}
	begin, end := markers(c)
	text := string(old)
	i := strings.Index(text, begin+"\n")
	j := strings.Index(text, end+"\n")
	switch {
	case i >= 0 && j > i:
		text = text[:i] + block.String() + text[j+len(end)+1:]
	case i >= 0 || j >= 0:
		return fmt.Errorf("%s has a damaged Warren block (%q without its pair); remove the block's lines and run again", path, strings.TrimSpace(map[bool]string{true: begin, false: end}[i >= 0]))
	default:
		if text != "" && !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		if text != "" {
			text += "\n"
		}
		text += block.String()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, []byte(text), mode)
}
