package access

// RecordingOptions say how a user's PTY sessions are recorded on an
// agent's embedded SSH server. Every such session is recorded; the
// options add to that, the strictest of the user's roles winning (as
// Teleport's record_session): one role asking is enough.
type RecordingOptions struct {
	// Input records what the user types (role option record_input).
	Input bool
	// Required ends the session when its recording cannot be written
	// (role option require_recording); RequiredBy names the first role
	// that asks, for the message the user reads.
	Required   bool
	RequiredBy string
}

// Recording returns the recording options of the user's roles.
func (p *Policy) Recording(id Identity) RecordingOptions {
	roles, _ := p.rolesOf(id)
	var o RecordingOptions
	for _, r := range roles {
		o.Input = o.Input || r.RecordInput
		if r.RequireRecording && !o.Required {
			o.Required, o.RequiredBy = true, r.Name
		}
	}
	return o
}
