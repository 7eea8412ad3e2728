package conf

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Log is the log section of a proxy's or an agent's config file:
//
//	log: {format: json, level: info}
//
// Format is text (default: logfmt-like key=value lines) or json (one
// object per line, for a log pipeline). Level is debug, info (default),
// warn or error. The --log-format, --log-level and --debug flags, when
// given, win over the file; a reload (SIGHUP) applies a changed level.
type Log struct {
	Format string `yaml:"format"`
	Level  string `yaml:"level"`
}

// Check reports a format or level that does not exist, naming the field
// as prefix.format or prefix.level.
func (l Log) Check(prefix string, errs *Errors) {
	if _, err := ParseLogFormat(l.Format); err != nil {
		errs.Addf(prefix+".format", "%v", err)
	}
	if _, err := ParseLogLevel(l.Level); err != nil {
		errs.Addf(prefix+".level", "%v", err)
	}
}

// ParseLogFormat returns "text" or "json" for s ("" is text).
func ParseLogFormat(s string) (string, error) {
	switch f := strings.ToLower(s); f {
	case "", "text":
		return "text", nil
	case "json":
		return "json", nil
	}
	return "", fmt.Errorf("unknown log format %q: use text or json", s)
}

// ParseLogLevel returns the level s names ("" is info).
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q: use debug, info, warn or error", s)
}

// NewLogger returns a logger writing format ("text" or "json") to w at
// the level level holds, which may change while it runs.
func NewLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
