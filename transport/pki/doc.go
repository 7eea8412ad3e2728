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
// [CheckUserCert] and [CheckHostCert] verify certificates with error messages
// precise enough to show to a user as they are.
//
// Every value here is immutable after [Init] or [Load]; an [Authority] is safe
// for concurrent use.
package pki
