package membership

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// logBridge turns memberlist's log.Logger lines ("[WARN] memberlist: ...")
// into slog records at debug level ("memberlist: ..."), keeping memberlist's
// own level as an attribute and adding no other key (the caller's logger
// names the component): memberlist is chatty, and what matters to an
// operator (joins, leaves, key mismatches, id conflicts) we log ourselves.
type logBridge struct{ log *slog.Logger }

func newMemberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(logBridge{l}, "", 0)
}

func (b logBridge) Write(p []byte) (int, error) {
	if !b.log.Enabled(context.Background(), slog.LevelDebug) {
		return len(p), nil
	}
	line := bytes.TrimRight(p, "\r\n")
	level := ""
	if len(line) > 0 && line[0] == '[' {
		if i := bytes.IndexByte(line, ']'); i > 0 {
			level = string(line[1:i])
			line = bytes.TrimLeft(line[i+1:], " ")
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	b.log.Debug("memberlist: "+string(line), "memberlist_level", level)
	return len(p), nil
}
