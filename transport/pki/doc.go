// Package pki holds the cluster's identity: the SSH user and host
// certificate authorities, the TLS CA for mutual TLS between proxies, the
// agents' join tokens and the bearer token of the proxy's HTTP API.
//
// # Layout on disk
//
// [Init] creates the identity in a data directory (mode 0700):
//
//	user_ca       OpenSSH private key of the user CA (0600)
//	user_ca.pub   its public key, one authorized_keys line (0644)
//	host_ca       OpenSSH private key of the host CA (0600)
//	host_ca.pub   its public key (0644)
//	tls_ca.key    PKCS#8 PEM ECDSA P-256 key of the TLS CA (0600)
//	tls_ca.crt    the self-signed TLS CA certificate, valid 10 years (0644)
//	join_tokens   agent join tokens, one per line, '#' starts a comment (0600)
//	api_token     bearer token of the HTTP JSON API (0600)
//
// [Load] reads it back on a proxy and refuses secret files that group or
// others may read, as OpenSSH does. Nodes and clients need only the public
// halves, which [LoadPublic] reads. Token files are read again on every check
// so that an operator can add or revoke a token without a restart.
//
// # Certificates
//
// Users hold OpenSSH user certificates: KeyId and the [ExtUser] extension
// carry the Warren user name, the valid principals are the unix logins the
// user may use, and [ExtRoles] carries the user's roles. Agents hold host
// certificates whose principals start with the agent's id, so a stock OpenSSH
// client trusts every node with the one line [KnownHostsLine] returns.
// [CheckUserCert] and [CheckHostCert] are the one check of user and host
// certificates: every SSH server (the proxies' user port, the agents' node
// servers, the tunnel server through [CheckAgentCert]) and every client (the
// agents' tunnels, `warren`, the benchmarks through [HostKeyCallback]) calls
// them, so that the policy is the same everywhere: a trusted CA that is not
// itself a certificate, the certificate type, the validity window, at least
// one principal and the one asked for, Ed25519, ECDSA or long RSA keys, no
// critical option the caller does not enforce, and source-address honoured
// against the client's address. Their errors ([CertError]) are precise enough
// to show to a user as they are, and tell their kind to errors.Is.
//
// Every value here is immutable after [Init] or [Load]; an [Authority] is safe
// for concurrent use.
package pki
