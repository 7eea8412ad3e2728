package nodessh

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
)

// TestOpenSSHSFTPExtensions runs OpenSSH's sftp in batch mode through every
// extension it uses, in-process and with Config.SFTPCommand (batch mode
// stops at the first command that fails, with a non-zero exit).
func TestOpenSSHSFTPExtensions(t *testing.T) {
	requireBinaries(t, "sftp")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts []harnessOption
	}{
		{"in-process", nil},
		{"SFTPCommand", []harnessOption{withConfig(func(c *Config) { c.SFTPCommand = []string{exe, sftpServerArg} })}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.opts...)
			src := filepath.Join(h.dir, "src.bin")
			want := randomFile(t, src, 5<<20+17)
			remote := filepath.Join(h.dir, "remote")
			got := filepath.Join(h.dir, "got.bin")
			batch := filepath.Join(h.dir, "batch")
			script := strings.Join([]string{
				"mkdir " + remote,
				"cd " + remote,
				"put -fp " + src + " a.bin", // fsync@openssh.com, FSETSTAT
				"cp a.bin b.bin",            // copy-data
				"rename b.bin c.bin",        // posix-rename@openssh.com
				"ln a.bin d.bin",            // hardlink@openssh.com
				"df .",                      // statvfs@openssh.com
				"ls -l a.bin",               // users-groups-by-id@openssh.com
				"ls -l",                     // READDIR's long names
				"get c.bin " + got,
			}, "\n") + "\n"
			if err := os.WriteFile(batch, []byte(script), 0o600); err != nil {
				t.Fatal(err)
			}
			res := h.run(nil, "sftp", append(h.clientOpts(h.key), "-P", h.port, "-b", batch, h.login+"@127.0.0.1")...)
			if res.code != 0 {
				t.Fatalf("sftp: exit %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
			}
			if s := fileSHA256(t, filepath.Join(remote, "c.bin")); s != want {
				t.Errorf("copied sha256 = %s, want %s", s, want)
			}
			if s := fileSHA256(t, got); s != want {
				t.Errorf("downloaded copy sha256 = %s, want %s", s, want)
			}
			if _, err := os.Stat(filepath.Join(remote, "b.bin")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("b.bin still there after rename: %v", err)
			}
			a, errA := os.Stat(filepath.Join(remote, "a.bin"))
			d, errD := os.Stat(filepath.Join(remote, "d.bin"))
			if errA != nil || errD != nil || !os.SameFile(a, d) {
				t.Fatalf("d.bin is not a hard link of a.bin: %v, %v", errA, errD)
			}
			// put -p set the times and mode on the open file.
			if s, err := os.Stat(src); err != nil || !a.ModTime().Equal(s.ModTime().Truncate(time.Second)) || a.Mode() != s.Mode() {
				t.Errorf("a.bin: %v %v, want the source's %v", a.ModTime(), a.Mode(), s)
			}
			if !strings.Contains(res.stdout, "Avail") {
				t.Errorf("df printed no table:\n%s", res.stdout)
			}
			// Both listings name a.bin's owner and group.
			owner, group := ownerNames(t, a)
			var lines []string
			for _, line := range strings.Split(res.stdout, "\n") {
				if strings.HasSuffix(line, " a.bin") && !strings.HasPrefix(line, "sftp>") {
					lines = append(lines, line)
				}
			}
			if len(lines) != 2 {
				t.Fatalf("want two ls -l lines for a.bin, got %q in:\n%s", lines, res.stdout)
			}
			for _, line := range lines {
				f := strings.Fields(line)
				if len(f) < 4 || f[2] != owner || f[3] != group {
					t.Errorf("ls -l line %q, want owner %s and group %s", line, owner, group)
				}
			}
		})
	}
}

// ownerNames are the user and group names of fi's owner.
func ownerNames(t *testing.T, fi os.FileInfo) (string, string) {
	t.Helper()
	st := fi.Sys().(*syscall.Stat_t)
	u, err := user.LookupId(strconv.Itoa(int(st.Uid)))
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroupId(strconv.Itoa(int(st.Gid)))
	if err != nil {
		t.Fatal(err)
	}
	return u.Username, g.Name
}

// startSFTP serves SFTP on one end of a socket pair, in dir, and returns
// the other end. When the test ends the client side closes and
// serveSFTP must return; its error goes to *served if that is not nil.
func startSFTP(t *testing.T, dir string, served *error) net.Conn {
	t.Helper()
	srv, cli := socketPair(t)
	done := make(chan error, 1)
	go func() {
		err := serveSFTP(context.Background(), srv, dir)
		srv.Close()
		done <- err
	}()
	t.Cleanup(func() {
		cli.Close()
		err := <-done
		if served != nil {
			*served = err
		} else if err != nil {
			t.Errorf("serveSFTP: %v", err)
		}
	})
	return cli
}

// TestSFTPGoClient drives the filter with pkg/sftp's client: transfers in
// the largest packets the filter announces, fsync, append, and the
// library's own extensions behind the filter.
func TestSFTPGoClient(t *testing.T) {
	dir := t.TempDir()
	conn := startSFTP(t, dir, nil)
	c, err := sftp.NewClientPipe(conn, conn, sftp.MaxPacketUnchecked(sftpMaxData), sftp.UseConcurrentWrites(true))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, ext := range []string{"copy-data", "fsync@openssh.com", "limits@openssh.com", "users-groups-by-id@openssh.com", "posix-rename@openssh.com", "statvfs@openssh.com", "hardlink@openssh.com"} {
		if _, ok := c.HasExtension(ext); !ok {
			t.Errorf("extension %s not announced", ext)
		}
	}

	data := make([]byte, 3<<20+5)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	f, err := c.Create("big.bin") // relative: in dir
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadFrom(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Errorf("fsync: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "big.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("uploaded file differs (%d bytes, %v)", len(got), err)
	}
	f, err = c.Open("big.bin")
	if err != nil {
		t.Fatal(err)
	}
	var down bytes.Buffer
	if _, err := f.WriteTo(&down); err != nil || !bytes.Equal(down.Bytes(), data) {
		t.Errorf("downloaded file differs (%d bytes, %v)", down.Len(), err)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != int64(len(data)) || fi.Mode().Perm() == 0 {
		t.Errorf("fstat = %v, %v", fi, err)
	}
	f.Close()

	if err := os.WriteFile(filepath.Join(dir, "log"), []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err = c.OpenFile("log", os.O_WRONLY|os.O_APPEND)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("b")); err != nil { // at offset 0, appended all the same
		t.Fatal(err)
	}
	f.Close()
	if got, _ := os.ReadFile(filepath.Join(dir, "log")); string(got) != "ab" {
		t.Errorf("after an append: %q, want %q", got, "ab")
	}

	if err := c.PosixRename("log", "log2"); err != nil {
		t.Errorf("posix-rename: %v", err)
	}
	if err := c.Link("log2", "log3"); err != nil {
		t.Errorf("hardlink: %v", err)
	}
	if _, err := c.StatVFS("."); err != nil {
		t.Errorf("statvfs: %v", err)
	}
	if _, err := c.Open("no-such-file"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("open of a missing file: %v, want not exist", err)
	}
}

// rawSFTP speaks SFTP packets, for what no client sends on demand.
type rawSFTP struct {
	t    *testing.T
	conn net.Conn
	id   uint32
	buf  []byte
}

// send sends a request of typ with an id and fields (uint32, uint64,
// string) and returns the id.
func (r *rawSFTP) send(typ byte, fields ...any) uint32 {
	r.t.Helper()
	r.id++
	b := binary.BigEndian.AppendUint32([]byte{0, 0, 0, 0, typ}, r.id)
	for _, f := range fields {
		switch v := f.(type) {
		case uint32:
			b = binary.BigEndian.AppendUint32(b, v)
		case uint64:
			b = binary.BigEndian.AppendUint64(b, v)
		case string:
			b = appendString(b, v)
		default:
			r.t.Fatalf("field %T", f)
		}
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	if _, err := r.conn.Write(b); err != nil {
		r.t.Fatal(err)
	}
	return r.id
}

// recv reads a reply to id and returns its type and what follows the id.
func (r *rawSFTP) recv(id uint32) (byte, *sftpDecoder) {
	r.t.Helper()
	frame, err := readFrame(r.conn, &r.buf, sftpMaxLibPacket)
	if err != nil {
		r.t.Fatal(err)
	}
	d := &sftpDecoder{b: frame[5:]}
	if got := d.u32(); got != id {
		r.t.Fatalf("reply to %d, want %d", got, id)
	}
	return frame[4], d
}

// status reads a STATUS reply to id and returns its code and message.
func (r *rawSFTP) status(id uint32) (uint32, string) {
	r.t.Helper()
	typ, d := r.recv(id)
	if typ != fxpStatus {
		r.t.Fatalf("reply type %d, want STATUS", typ)
	}
	return d.u32(), d.str()
}

func (r *rawSFTP) open(name string, pflags uint32) string {
	r.t.Helper()
	typ, d := r.recv(r.send(fxpOpen, name, pflags, uint32(0)))
	if typ != fxpHandle {
		r.t.Fatalf("open %s: reply type %d, want HANDLE", name, typ)
	}
	return d.str()
}

func (r *rawSFTP) close(h string) {
	r.t.Helper()
	if code, msg := r.status(r.send(fxpClose, h)); code != fxOK {
		r.t.Errorf("close %s: %d %s", h, code, msg)
	}
}

// copyData asks for copy-data and returns the status.
func (r *rawSFTP) copyData(rh string, roff, n uint64, wh string, woff uint64) (uint32, string) {
	r.t.Helper()
	return r.status(r.send(fxpExtended, "copy-data", rh, roff, n, wh, woff))
}

// TestSFTPFilterProtocol checks the filter's answers packet by packet.
func TestSFTPFilterProtocol(t *testing.T) {
	dir := t.TempDir()
	r := &rawSFTP{t: t, conn: startSFTP(t, dir, nil)}

	if _, err := r.conn.Write([]byte{0, 0, 0, 5, 1, 0, 0, 0, 3}); err != nil { // INIT, version 3
		t.Fatal(err)
	}
	frame, err := readFrame(r.conn, &r.buf, sftpMaxLibPacket)
	if err != nil || frame[4] != fxpVersion {
		t.Fatalf("VERSION: %v, %v", frame, err)
	}
	d := &sftpDecoder{b: frame[5:]}
	if v := d.u32(); v != 3 {
		t.Errorf("version %d", v)
	}
	var exts []string
	for len(d.b) > 0 && !d.bad {
		exts = append(exts, d.str())
		d.str()
	}
	for _, e := range sftpExtensions {
		if !slices.Contains(exts, e[0]) {
			t.Errorf("VERSION lacks %s: %q", e[0], exts)
		}
	}
	if len(exts) != len(slices.Compact(slices.Sorted(slices.Values(exts)))) {
		t.Errorf("VERSION repeats an extension: %q", exts)
	}

	t.Run("limits", func(t *testing.T) {
		typ, d := r.recv(r.send(fxpExtended, "limits@openssh.com"))
		got := []uint64{d.u64(), d.u64(), d.u64(), d.u64()}
		if typ != fxpExtendedReply || !slices.Equal(got, []uint64{sftpMaxPacket, sftpMaxData, sftpMaxData, sftpMaxHandles}) {
			t.Errorf("limits: type %d %v", typ, got)
		}
	})

	t.Run("users-groups-by-id", func(t *testing.T) {
		u, err := user.LookupId("0")
		if err != nil {
			t.Skip(err)
		}
		g, err := user.LookupGroupId("0")
		if err != nil {
			t.Skip(err)
		}
		ids := func(ids ...uint32) string {
			var b []byte
			for _, id := range ids {
				b = binary.BigEndian.AppendUint32(b, id)
			}
			return string(b)
		}
		typ, d := r.recv(r.send(fxpExtended, "users-groups-by-id@openssh.com", ids(0, 0xfffffff0), ids(0)))
		users, groups := &sftpDecoder{b: d.bytes()}, &sftpDecoder{b: d.bytes()}
		got := []string{users.str(), users.str(), groups.str()}
		if typ != fxpExtendedReply || !slices.Equal(got, []string{u.Username, "", g.Name}) || len(users.b)+len(groups.b) != 0 {
			t.Errorf("names: type %d %q", typ, got)
		}
	})

	if err := os.WriteFile(filepath.Join(dir, "digits"), []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("copy-data part of a file", func(t *testing.T) {
		src := r.open("digits", fxfRead)
		dst := r.open("part", fxfWrite|fxfCreat|fxfTrunc)
		if code, msg := r.copyData(src, 2, 5, dst, 1); code != fxOK {
			t.Errorf("copy-data: %d %s", code, msg)
		}
		if code, _ := r.copyData(src, 0, 0, src, 20); code != fxPermission {
			t.Errorf("copy-data into a read-only handle: %d, want permission denied", code)
		}
		if code, _ := r.copyData(src, 0, 0, "7", 0); code != fxFailure {
			t.Errorf("copy-data to a handle that is not a file: %d, want failure", code)
		}
		r.close(src)
		r.close(dst)
		if got, _ := os.ReadFile(filepath.Join(dir, "part")); string(got) != "\x0023456" {
			t.Errorf("part = %q, want %q", got, "\x0023456")
		}
	})

	t.Run("copy-data within one handle", func(t *testing.T) {
		h := r.open("digits", fxfRead|fxfWrite)
		if code, msg := r.copyData(h, 0, 0, h, 5); code != fxFailure || !strings.Contains(msg, "overlap") {
			t.Errorf("overlapping copy: %d %q, want a failure", code, msg)
		}
		if code, msg := r.copyData(h, 0, 3, h, 10); code != fxOK {
			t.Errorf("copy past the end: %d %s", code, msg)
		}
		r.close(h)
		if got, _ := os.ReadFile(filepath.Join(dir, "digits")); string(got) != "0123456789012" {
			t.Errorf("digits = %q, want %q", got, "0123456789012")
		}
	})

	t.Run("unknown extension", func(t *testing.T) {
		// pkg/sftp alone would answer success.
		if code, _ := r.status(r.send(fxpExtended, "lsetstat@openssh.com", "digits", uint32(0))); code != fxOpUnsupported {
			t.Errorf("unknown extension: %d, want unsupported", code)
		}
	})

	t.Run("read at the end", func(t *testing.T) {
		h := r.open("digits", fxfRead)
		if code, _ := r.status(r.send(fxpRead, h, uint64(13), uint32(10))); code != fxEOF {
			t.Errorf("read at the end: %d, want EOF", code)
		}
		r.close(h)
	})

	t.Run("requests take effect in order", func(t *testing.T) {
		// A SETSTAT (the library's) that truncates, then at once a READ
		// (the filter's): the read must see the truncation.
		h := r.open("digits", fxfRead)
		truncate := r.send(9, "digits", uint32(attrSize), uint64(0))
		read := r.send(fxpRead, h, uint64(0), uint32(10))
		for range 2 {
			frame, err := readFrame(r.conn, &r.buf, sftpMaxLibPacket)
			if err != nil {
				t.Fatal(err)
			}
			d := &sftpDecoder{b: frame[5:]}
			switch id := d.u32(); {
			case id == truncate && (frame[4] != fxpStatus || d.u32() != fxOK):
				t.Errorf("truncate: type %d", frame[4])
			case id == read && (frame[4] != fxpStatus || d.u32() != fxEOF):
				t.Errorf("read after the truncate: type %d, want EOF", frame[4])
			}
		}
		r.close(h)
		if err := os.WriteFile(filepath.Join(dir, "digits"), []byte("0123456789"), 0o600); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("handles per session", func(t *testing.T) {
		var hs []string
		for range sftpMaxHandles {
			hs = append(hs, r.open("digits", fxfRead))
		}
		if code, msg := r.status(r.send(fxpOpen, "digits", uint32(fxfRead), uint32(0))); code != fxFailure || !strings.Contains(msg, "too many open files") {
			t.Errorf("open %d: %d %q, want too many open files", sftpMaxHandles+1, code, msg)
		}
		for _, h := range hs {
			r.close(h)
		}
	})

	t.Run("directories stay the library's", func(t *testing.T) {
		typ, d := r.recv(r.send(11, ".")) // OPENDIR
		if typ != fxpHandle {
			t.Fatalf("opendir: type %d", typ)
		}
		h := d.str()
		if strings.HasPrefix(h, "f") {
			t.Errorf("directory handle %q looks like the filter's", h)
		}
		typ, _ = r.recv(r.send(12, h)) // READDIR
		if typ != 104 {                // NAME
			t.Errorf("readdir: type %d, want NAME", typ)
		}
		r.close(h)
		if code, _ := r.status(r.send(fxpClose, "f999")); code == fxOK {
			t.Errorf("closing an unknown handle succeeded")
		}
	})
}

// TestSFTPFilterMalformed checks that a request that does not parse ends
// the session with an error, as OpenSSH's sftp-server does.
func TestSFTPFilterMalformed(t *testing.T) {
	var served error
	t.Run("session", func(t *testing.T) {
		r := &rawSFTP{t: t, conn: startSFTP(t, t.TempDir(), &served)}
		r.send(fxpOpen, "x") // no pflags, no attributes
		if _, err := io.Copy(io.Discard, r.conn); err != nil {
			t.Errorf("after a malformed request: %v, want the server to hang up", err)
		}
	})
	if !errors.Is(served, errSFTPMalformed) {
		t.Errorf("serveSFTP = %v, want %v", served, errSFTPMalformed)
	}
}
