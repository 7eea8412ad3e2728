package connect

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/warren-proxy/warren/internal/atomicfile"
	"github.com/warren-proxy/warren/internal/model"
)

// The proxies file lists the candidates, one a line:
//
//	# comment
//	ID REGION USER_ADDR [HTTP_ADDR]
//
// `warren config ssh` writes it from the cluster's status; an operator may
// write one by hand.

// maxProxiesFile bounds the proxies file (a few hundred proxies).
const maxProxiesFile = 1 << 20

// ReadProxies reads a proxies file.
func ReadProxies(path string) ([]Candidate, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read the proxies file: %w", err)
	}
	defer f.Close()
	cands, err := ParseProxies(io.LimitReader(f, maxProxiesFile))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cands, nil
}

// ParseProxies parses the text of a proxies file, reporting every bad line
// at once.
func ParseProxies(r io.Reader) ([]Candidate, error) {
	var cands []Candidate
	var errs []error
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 || len(f) > 4 {
			errs = append(errs, fmt.Errorf("line %d: want ID REGION USER_ADDR [HTTP_ADDR], got %d fields", n, len(f)))
			continue
		}
		c := Candidate{ID: f[0], Region: f[1], UserAddr: f[2]}
		if len(f) == 4 {
			c.HTTPAddr = f[3]
		}
		if err := c.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", n, err))
			continue
		}
		if seen[c.ID] {
			errs = append(errs, fmt.Errorf("line %d: proxy %s is listed twice", n, c.ID))
			continue
		}
		seen[c.ID] = true
		cands = append(cands, c)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	return cands, errors.Join(errs...)
}

// Validate reports every problem with c.
func (c Candidate) Validate() error {
	errs := []error{model.CheckName("proxy id", c.ID), CheckRegion(c.Region), CheckAddr("user address", c.UserAddr)}
	if c.HTTPAddr != "" {
		errs = append(errs, CheckAddr("HTTP address", c.HTTPAddr))
	}
	return errors.Join(errs...)
}

// CheckAddr reports an address that is not host:port with a host and a
// port from 1 to 65535.
func CheckAddr(what, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %s is not host:port", what, model.Quote(addr))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%s %s: the port must be a number from 1 to 65535", what, model.Quote(addr))
	}
	if host == "" || strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r == '/' || r > '~' }) {
		return fmt.Errorf("%s %s: the host must be a name or an IP address", what, model.Quote(addr))
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%s %s: %s is no address to connect to", what, model.Quote(addr), host)
	}
	return nil
}

// FormatProxies renders cands as a proxies file.
func FormatProxies(cands []Candidate) []byte {
	var b bytes.Buffer
	b.WriteString("# Proxies for `warren connect`: ID REGION USER_ADDR [HTTP_ADDR]. Written by `warren config ssh`.\n")
	for _, c := range cands {
		fmt.Fprintf(&b, "%s %s %s", c.ID, c.Region, c.UserAddr)
		if c.HTTPAddr != "" {
			fmt.Fprintf(&b, " %s", c.HTTPAddr)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// maxStateFile bounds the state file; a larger one is ignored.
const maxStateFile = 1 << 20

// LoadState reads the state file. A missing, unreadable or damaged file
// gives an empty state (and the reason, for --debug): the state only makes
// the choice sticky, and losing it must never stop a connection.
func LoadState(path string) (*State, error) {
	st := &State{}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return st, nil
	case err != nil:
		return st, fmt.Errorf("read state: %w", err)
	case len(data) > maxStateFile:
		return st, fmt.Errorf("state file %s is over %d bytes; ignored", path, maxStateFile)
	}
	if err := json.Unmarshal(data, st); err != nil {
		return &State{}, fmt.Errorf("state file %s is damaged (%v); starting afresh", path, err)
	}
	// Keep only what could have been written: valid names, sane figures.
	for k, id := range st.Homes {
		if (k != "" && !model.ValidName(k)) || !model.ValidName(id) {
			delete(st.Homes, k)
		}
	}
	for id, ss := range st.Samples {
		if !model.ValidName(id) || len(ss) > MaxSamples {
			delete(st.Samples, id)
			continue
		}
		for _, x := range ss {
			if x.RTT <= 0 || x.RTT > time.Minute {
				delete(st.Samples, id)
				break
			}
		}
	}
	return st, nil
}

// SaveState writes st to path atomically (a temporary file renamed over
// it), readable by its owner only.
func SaveState(path string, st *State) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}
