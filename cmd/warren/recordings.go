package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/warren-proxy/warren/internal/asciicast"
	"github.com/warren-proxy/warren/internal/model"
)

// runRecordings lists session recordings or writes one out:
// `warren recordings ls`, `warren recordings get ID > session.cast`.
func runRecordings(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{"recordings needs a subcommand: ls [--user U] [--resource R] [--since 24h], or get ID"}
	}
	fs := newFlags("recordings "+args[0], subSynopsis("recordings", args[0]))
	cf := addClientFlags(fs)
	since := fs.String("since", "24h", "how far back: a duration (24h) or a time (2026-12-01, 2026-12-01T10:00:00Z)")
	user := fs.String("user", "", "only this user's recordings")
	resource := fs.String("resource", "", "only recordings on this resource")
	session := fs.String("session", "", "only this session's recordings (its id in the audit log)")
	limit := fs.Int("limit", 100, "at most this many, the newest")
	local := fs.Bool("local", false, "only the recordings the proxy asked holds (default: every proxy's)")
	asJSON := fs.Bool("json", false, "print JSON lines")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "ls":
		if fs.NArg() != 0 {
			return usageError{"recordings ls takes no arguments; filter with --user, --resource, --session, --since"}
		}
		cmd := fmt.Sprintf("recordings ls --since %s --limit %d", *since, *limit)
		for _, f := range []struct{ name, v string }{{"user", *user}, {"resource", *resource}, {"session", *session}} {
			if f.v == "" {
				continue
			}
			if strings.ContainsFunc(f.v, func(r rune) bool { return r <= ' ' || r == '\'' || r == '"' }) {
				return usageError{fmt.Sprintf("--%s %q: names hold no spaces or quotes", f.name, f.v)}
			}
			cmd += " --" + f.name + " " + f.v
		}
		if strings.ContainsFunc(*since, func(r rune) bool { return r <= ' ' || r == '\'' || r == '"' }) {
			return usageError{fmt.Sprintf("--since %q: a duration (24h) or a time (2026-12-01)", *since)}
		}
		if *local {
			cmd += " --local"
		}
		if *asJSON {
			cmd += " --json"
		}
		return cf.proxyCommand(ctx, cmd, os.Stdout)
	case "get":
		if fs.NArg() != 1 {
			return usageError{"recordings get takes one recording id (see `warren recordings ls`)"}
		}
		id, err := recordingID(fs.Arg(0))
		if err != nil {
			return err
		}
		return cf.proxyCommand(ctx, "recordings get "+id, os.Stdout)
	}
	return usageError{fmt.Sprintf("unknown recordings subcommand %q: use ls or get", args[0])}
}

func recordingID(s string) (string, error) {
	if !model.ValidName(s) || len(s) > 72 {
		return "", usageError{fmt.Sprintf("%s is not a recording id (see `warren recordings ls`)", model.Quote(s))}
	}
	return s, nil
}

// maxPlayBytes bounds a recording `warren play` holds in memory.
const maxPlayBytes = 1 << 30

// runPlay plays a recording on the terminal with its timing:
// `warren play ID [--speed 2] [--idle 2s]`.
func runPlay(ctx context.Context, args []string) error {
	fs := newFlags("play", "ID [--speed X] [--idle D]")
	cf := addClientFlags(fs)
	speed := fs.Float64("speed", 1, "play this many times faster (0.5 is half speed)")
	idle := fs.Duration("idle", 0, "cut every pause longer than this to this (0: keep every pause)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"play takes one recording id (see `warren recordings ls`)"}
	}
	if *speed <= 0 || *speed > 1e6 {
		return usageError{fmt.Sprintf("--speed %s: give a positive factor, like 2 or 0.5", strconv.FormatFloat(*speed, 'g', -1, 64))}
	}
	if *idle < 0 {
		return usageError{"--idle must not be negative"}
	}
	id, err := recordingID(fs.Arg(0))
	if err != nil {
		return err
	}
	var cast limitedBuffer
	cast.max = maxPlayBytes
	if err := cf.proxyCommand(ctx, "recordings get "+id, &cast); err != nil {
		return err
	}
	return play(ctx, bytes.NewReader(cast.b.Bytes()), os.Stdout, *speed, *idle)
}

// limitedBuffer refuses to grow past max.
type limitedBuffer struct {
	b   bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if l.b.Len()+len(p) > l.max {
		return 0, fmt.Errorf("recording larger than %d bytes; use `warren recordings get ID > file.cast` and asciinema", l.max)
	}
	return l.b.Write(p)
}

// play writes a recording's output to w at its pace, divided by speed,
// with pauses cut to idle (if positive).
func play(ctx context.Context, r io.Reader, w io.Writer, speed float64, idle time.Duration) error {
	rd, err := asciicast.NewReader(r, asciicast.Limits{})
	if err != nil {
		return err
	}
	last := 0.0
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if ev.Code != asciicast.Output {
			continue
		}
		wait := time.Duration((ev.Time - last) / speed * float64(time.Second))
		if idle > 0 && wait > idle {
			wait = idle
		}
		last = ev.Time
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		if _, err := io.WriteString(w, ev.Data); err != nil {
			return err
		}
	}
}
