package accept_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/warren-proxy/warren/internal/accept"
)

func TestTemporary(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}, true},
		{&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.ENFILE)}, true},
		{fmt.Errorf("wrapped: %w", &net.OpError{Op: "accept", Net: "tcp", Err: syscall.ECONNABORTED}), true},
		{&net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}, false},
		{&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EINVAL)}, false},
		{errors.New("plain"), false},
	} {
		if got := accept.Temporary(tt.err); got != tt.want {
			t.Errorf("Temporary(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestBackoffDoublesToMax(t *testing.T) {
	var b accept.Backoff
	var got []time.Duration
	for range 10 {
		got = append(got, b.Next())
	}
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("waits %v, want %v ms", got, want)
		}
	}
	b.Reset()
	if d := b.Next(); d != accept.First {
		t.Errorf("after Reset: %v, want %v", d, accept.First)
	}
}

func TestSleepEndsWhenDone(t *testing.T) {
	done := make(chan struct{})
	close(done)
	start := time.Now()
	if accept.Sleep(time.Minute, done) {
		t.Error("Sleep reported true with done closed")
	}
	if time.Since(start) > 10*time.Second {
		t.Error("Sleep waited with done closed")
	}
	if !accept.Sleep(time.Millisecond, nil) {
		t.Error("Sleep with a nil done reported false")
	}
}
