package nodessh

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// memRecorder keeps what a session records; failOutput makes Output fail
// once that many bytes were recorded.
type memRecorder struct {
	mu         sync.Mutex
	out, in    bytes.Buffer
	resizes    []string
	closed     int
	failOutput int
}

func (r *memRecorder) Output(p []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failOutput > 0 && r.out.Len()+len(p) > r.failOutput {
		return errors.New("the session ends: its recording cannot be written (disk full)")
	}
	r.out.Write(p)
	return nil
}

func (r *memRecorder) Input(p []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.in.Write(p)
	return nil
}

func (r *memRecorder) Resize(cols, rows int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resizes = append(r.resizes, fmt.Sprintf("%dx%d", cols, rows))
	return nil
}

func (r *memRecorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed++
	return nil
}

func (r *memRecorder) snapshot() (out, in string, resizes []string, closed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String(), r.in.String(), append([]string(nil), r.resizes...), r.closed
}

// TestRecordPTYSession: a PTY job's output, input and resizes reach the
// recorder, which is closed once when the job ends; the hook sees the
// terminal and the command.
func TestRecordPTYSession(t *testing.T) {
	rec := &memRecorder{}
	var infos []RecordInfo
	var mu sync.Mutex
	h := newHarness(t, withConfig(func(c *Config) {
		c.Record = func(_ net.Conn, info RecordInfo) (Recorder, error) {
			mu.Lock()
			infos = append(infos, info)
			mu.Unlock()
			return rec, nil
		}
	}))
	c := h.mustDialGo(&certSpec{})
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if err := sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	in, _ := sess.StdinPipe()
	out, _ := sess.StdoutPipe()
	const command = `stty -echo; echo ready; read x; echo "got $x"`
	if err := sess.Start(command); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	waitFor(t, r, "ready")
	if err := sess.WindowChange(50, 132); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Write([]byte("secret-ish\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, "got secret-ish")
	if err := sess.Wait(); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	_, _ = io.Copy(io.Discard, r)
	gotOut, gotIn, resizes, closed := rec.snapshot()
	if !strings.Contains(gotOut, "ready") || !strings.Contains(gotOut, "got secret-ish") {
		t.Errorf("recorded output %q lacks what the terminal showed", gotOut)
	}
	if gotIn != "secret-ish\n" {
		t.Errorf("recorded input %q, want %q", gotIn, "secret-ish\n")
	}
	if len(resizes) != 1 || resizes[0] != "132x50" {
		t.Errorf("recorded resizes %q, want [132x50]", resizes)
	}
	if closed != 1 {
		t.Errorf("recorder closed %d times, want 1", closed)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(infos) != 1 || infos[0].Term != "xterm" || infos[0].Cols != 80 || infos[0].Rows != 24 || infos[0].Command != command || infos[0].Channel != 1 || infos[0].Login != h.login {
		t.Errorf("Record saw %+v", infos)
	}
}

// TestRecordOnlyPTY: a job without a PTY (scp, a plain exec) is not
// recorded.
func TestRecordOnlyPTY(t *testing.T) {
	called := 0
	h := newHarness(t, withConfig(func(c *Config) {
		c.Record = func(net.Conn, RecordInfo) (Recorder, error) {
			called++
			return &memRecorder{}, nil
		}
	}))
	if got := h.mustSSH("echo plain"); strings.TrimSpace(got) != "plain" {
		t.Fatalf("got %q", got)
	}
	if called != 0 {
		t.Errorf("Record called %d times for a job without a PTY", called)
	}
}

// TestRecordRefusedEndsBeforeTheJob: a hook that cannot record refuses
// the job, and the user reads why.
func TestRecordRefusedEndsBeforeTheJob(t *testing.T) {
	h := newHarness(t, withConfig(func(c *Config) {
		c.Record = func(net.Conn, RecordInfo) (Recorder, error) {
			return nil, errors.New("this session must be recorded, and the node cannot record it: spool full")
		}
	}))
	res := h.ssh(nil, []string{"-tt"}, "echo never-ran")
	if res.code == 0 || strings.Contains(res.stdout, "never-ran") {
		t.Fatalf("job ran: exit %d, stdout %q", res.code, res.stdout)
	}
	if !strings.Contains(res.stderr+res.stdout, "must be recorded, and the node cannot record it") {
		t.Errorf("the user was not told why: stdout %q stderr %q", res.stdout, res.stderr)
	}
}

// TestRecordFailureEndsTheSession: when the recorder fails mid-session
// the job is ended and the user reads why; what was not recorded is not
// shown.
func TestRecordFailureEndsTheSession(t *testing.T) {
	rec := &memRecorder{failOutput: 64}
	h := newHarness(t, withConfig(func(c *Config) {
		c.Record = func(net.Conn, RecordInfo) (Recorder, error) { return rec, nil }
	}))
	res := h.ssh(nil, []string{"-tt"}, "echo start; sleep 0.2; i=0; while [ $i -lt 200 ]; do echo line-$i-xxxxxxxxxxxx; i=$((i+1)); done; sleep 30; echo never-reached")
	if res.code == 0 || strings.Contains(res.stdout, "never-reached") || strings.Contains(res.stdout, "line-199-") {
		t.Fatalf("session ran on: exit %d, stdout %q", res.code, res.stdout)
	}
	if !strings.Contains(res.stdout+res.stderr, "its recording cannot be written") {
		t.Errorf("the user was not told why: stdout %q stderr %q", res.stdout, res.stderr)
	}
	if _, _, _, closed := rec.snapshot(); closed != 1 {
		t.Errorf("recorder closed %d times, want 1", closed)
	}
}
