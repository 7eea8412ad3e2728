// Package echo serves TCP echo: the upstream behind the tcp resources of
// `warren dev`, the tests and the benchmarks.
package echo

import (
	"errors"
	"net"
	"sync"

	"github.com/warren-proxy/warren/internal/accept"
)

// Serve echoes what every connection that ln accepts sends, passing each
// read through edit first when it is not nil. It returns when ln is
// closed (or fails for good), after closing the connections still open
// and waiting for them; it waits out errors that pass, such as EMFILE.
func Serve(ln net.Listener, edit func([]byte)) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // guards conns
		conns = map[net.Conn]bool{}
	)
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	var backoff accept.Backoff
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || !accept.Temporary(err) {
				return
			}
			// Out of file descriptors and the like: wait and retry, as
			// net/http does; closing ln ends the wait's next Accept.
			accept.Sleep(backoff.Next(), nil)
			continue
		}
		backoff.Reset()
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			serve(c, edit)
			c.Close()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
}

func serve(c net.Conn, edit func([]byte)) {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if edit != nil {
				edit(buf[:n])
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
