package streams

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// What Shallow sets: see there.
const (
	ShallowRTT    = time.Millisecond
	ShallowBuffer = 128 << 10
)

// Shallow keeps the kernel's queues of a connection that many sessions
// share (an agent's tunnel) short when its path is short. Autotuning grows
// a TCP connection's buffers to several MiB under a bulk transfer, and
// every byte queued there is ahead of every other session's keystroke: on
// loopback, with 8 uploads on one tunnel, the keystroke round trip's p99
// was 105 ms, the time to drain their 8 SSH channel windows of 2 MiB. A
// connection whose smoothed round trip is under ShallowRTT (a data
// centre's, or loopback) gets send and receive buffers of ShallowBuffer
// (the kernel doubles the figure for its bookkeeping); above them the
// sessions take turns at the SSH connection's write lock, a packet each.
// A buffer caps a connection at about a buffer per round trip: at the
// bound, about 128 MiB/s (far more below it). A longer path keeps
// autotuning. It returns the round trip it saw, and whether it set the
// buffers.
func Shallow(c net.Conn) (time.Duration, bool) { return shallow(c, ShallowRTT) }

func shallow(c net.Conn, below time.Duration) (time.Duration, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var ierr error
	if err := raw.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || ierr != nil {
		return 0, false
	}
	rtt := time.Duration(info.Rtt) * time.Microsecond
	if rtt >= below {
		return rtt, false
	}
	if tc.SetWriteBuffer(ShallowBuffer) != nil || tc.SetReadBuffer(ShallowBuffer) != nil {
		return rtt, false
	}
	return rtt, true
}
