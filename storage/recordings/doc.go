// Package recordings keeps session recordings (asciicast v2, see
// internal/asciicast) on disk: the agent's spool, where a recording is
// written while its session runs and kept until enough proxies hold it,
// and the proxy's store, which holds uploaded recordings for `warren
// recordings` and `warren play`.
//
// # Spool (agent)
//
// One directory, 0700. A session being recorded is <id>.cast.part with
// its metadata in <id>.json (the ticket its proxy signed, the login, which
// proxies hold it already). At the session's end the cast is fsync'd and
// renamed to <id>.cast: from then on it is pending upload. The spool's
// total size is capped (Spool.MaxBytes): a write past it fails with
// ErrSpoolFull, which a session that must be recorded cannot survive and
// any other session shrugs off (its recording stops there). A .part file
// found at start (the agent stopped mid-session) is cut after its last
// whole line, closed with a marker saying so, and becomes pending: a
// restart loses no recorded byte that reached the disk.
//
// # Store (proxy)
//
// <dir>/index.db (bbolt) maps recording ids to their metadata (Meta);
// <dir>/casts/<id>.cast holds the bytes. Put writes a temporary file,
// checks size, SHA-256 and every line of the cast, fsyncs, renames, then
// indexes: a recording is listed only once it is whole. Putting the same
// bytes again is a no-op (agents retry); different bytes under a stored id
// are refused.
package recordings
