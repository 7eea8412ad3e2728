// Package storage holds Warren's on-disk state, one package per store:
//
//   - catalog (Pebble): a proxy's route and heartbeat state, so a restarted
//     proxy serves its last-known view at once.
//   - audit (bbolt): a proxy's audit log, durable before a session is
//     reported as started.
//   - identity (bbolt): an agent's own keys, certificates and ID.
//   - recordings: an agent's spool of session recordings (files) and a
//     proxy's store of them (bbolt index and files).
//
// Storage sits at the bottom of the dependency graph: nothing under storage/
// imports another package of this module but internal helpers, which
// internal/lint enforces with the rest of the dependency table.
package storage
