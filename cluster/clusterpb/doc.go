// Package clusterpb holds the messages proxies exchange over protoactor
// remote: routes and their deltas, dial requests, status, configuration
// entries, token redemptions, audit queries and login reports. They carry
// control only; session bytes go on the peer data streams
// (transport/peer).
//
// cluster.pb.go is generated from cluster.proto by `make proto` and
// committed, so a build needs no generator.
package clusterpb
