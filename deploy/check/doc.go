// Package check checks the deployment blueprints of deploy/ offline, with
// the real tools' code: the Helm chart through Helm's own lint and
// template actions, every object it renders decoded strictly into its
// Kubernetes API type, the Compose file through compose-go's loader (the
// one docker compose uses) and its init script with a built warren, the
// systemd units through systemd-analyze verify, and every proxy.yaml and
// agent.yaml they carry through Warren's own config loaders; and that the
// paths the deployment documents name exist.
//
// It is a Go module of its own (deploy/check/go.mod) so that Helm's and
// Kubernetes' dependencies stay out of Warren's go.mod; `make test` runs
// it with `make test-deploy`.
package check
