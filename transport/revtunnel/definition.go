package revtunnel

import "github.com/warren-proxy/warren/internal/model"

// ReqDefinitions is sent by a proxy to its agents (Definitions, no reply)
// whenever the cluster's dynamic resource definitions change.
const ReqDefinitions = "definitions@warren.dev"

// Definitions is the payload of ReqDefinitions: the whole current set.
type Definitions struct {
	Definitions []model.Definition `json:"definitions"`
}
