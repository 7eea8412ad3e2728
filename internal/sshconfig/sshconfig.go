// Package sshconfig renders the ssh_config block that lets stock OpenSSH
// reach Warren resources: an entry per proxy (certificate, known_hosts with
// the cluster's proxy host CA) and the resources behind a ProxyJump (a
// known_hosts with the agent host CA). The two known_hosts files keep the
// two CAs apart: a certificate an agent holds is never accepted for a
// proxy, nor a proxy's for a resource.
package sshconfig

import (
	"io"
	"net"
	"text/template"
)

// Proxy is one proxy entry.
type Proxy struct{ Name, Addr string }

// Host and Port split Addr.
func (p Proxy) Host() string { h, _, _ := net.SplitHostPort(p.Addr); return h }
func (p Proxy) Port() string { _, port, _ := net.SplitHostPort(p.Addr); return port }

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
	Hosts              []string // resources, reached through the first proxy
}

var tmpl = template.Must(template.New("ssh_config").Parse(`# Warren: written by warren; resources are reached through {{(index .Proxies 0).Name}}.
{{range .Proxies}}Host {{.Name}}
    HostName {{.Host}}
    Port {{.Port}}
    User {{$.User}}
    IdentityFile {{$.Identity}}
    CertificateFile {{$.Identity}}-cert.pub
    IdentitiesOnly yes
    UserKnownHostsFile {{$.KnownHosts}}
    StrictHostKeyChecking yes
{{end}}
Host{{range .Hosts}} {{.}}{{end}}
    ProxyJump {{(index .Proxies 0).Name}}
    User {{.Login}}
    IdentityFile {{.Identity}}
    CertificateFile {{.Identity}}-cert.pub
    IdentitiesOnly yes
    UserKnownHostsFile {{.ResourceKnownHosts}}
    StrictHostKeyChecking yes
`))

// Write renders c as ssh_config text.
func Write(w io.Writer, c Config) error { return tmpl.Execute(w, c) }
