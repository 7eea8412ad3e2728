package nodessh

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/user"
	"path"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// SFTP version 3 numbers (draft-ietf-secsh-filexfer-02) that the filter
// uses.
const (
	fxpVersion       = 2
	fxpOpen          = 3
	fxpClose         = 4
	fxpRead          = 5
	fxpWrite         = 6
	fxpFstat         = 8
	fxpFsetstat      = 10
	fxpStatus        = 101
	fxpHandle        = 102
	fxpData          = 103
	fxpAttrs         = 105
	fxpExtended      = 200
	fxpExtendedReply = 201
	fxOK             = 0
	fxEOF            = 1
	fxNoSuchFile     = 2
	fxPermission     = 3
	fxFailure        = 4
	fxBadMessage     = 5
	fxOpUnsupported  = 8
	fxfRead          = 0x01
	fxfWrite         = 0x02
	fxfAppend        = 0x04
	fxfCreat         = 0x08
	fxfTrunc         = 0x10
	fxfExcl          = 0x20
	attrSize         = 0x01
	attrUIDGID       = 0x02
	attrPermissions  = 0x04
	attrACModTime    = 0x08
	attrExtended     = 0x80000000
	posixRegular     = 0o100000
	posixDir         = 0o040000
	posixSymlink     = 0o120000
	posixFIFO        = 0o010000
	posixSocket      = 0o140000
	posixCharDevice  = 0o020000
	posixBlockDevice = 0o060000
)

const (
	// sftpMaxPacket bounds a packet from the client (without its length),
	// as OpenSSH's SFTP_MAX_MSG_LENGTH and pkg/sftp do.
	sftpMaxPacket = 256 << 10
	// sftpMaxData is the longest READ answered and WRITE expected, as in
	// OpenSSH's sftp-server; announced by limits@openssh.com.
	sftpMaxData = sftpMaxPacket - 1024
	// sftpMaxLibPacket bounds a packet from pkg/sftp: it sends at most
	// 32 KiB of data and 128 names at a time.
	sftpMaxLibPacket = 1 << 20
	// sftpMaxHandles bounds the files one SFTP session holds open.
	sftpMaxHandles = 256
	// sftpMaxIDs bounds the ids of one users-groups-by-id request (OpenSSH
	// asks for those of one listing), and sftpNameCache the names kept.
	sftpMaxIDs    = 1024
	sftpNameCache = 1024
)

// sftpExtensions are announced in VERSION besides the library's own.
var sftpExtensions = [][2]string{
	{"copy-data", "1"},
	{"fsync@openssh.com", "1"},
	{"limits@openssh.com", "1"},
	{"users-groups-by-id@openssh.com", "1"},
}

// sftpFilter stands between an SFTP client and pkg/sftp's server (see
// serveSFTP): it serves files and the extensions the library lacks, and
// passes everything else through. Requests take effect in the order they
// came, as with the library alone (its command worker waits for the reads
// and writes before it): the filter serves its own requests one at a
// time, in the request loop, and only once the library has answered every
// request passed to it. Replies may still overtake each other; clients
// match them by id.
type sftpFilter struct {
	ctx     context.Context
	client  io.ReadWriter
	lib     io.Writer // requests for the library
	workDir string

	outMu sync.Mutex // whole packets to the client, from the filter and the library

	libMu      sync.Mutex
	libIdle    *sync.Cond // broadcast when libPending drops to 0, the library is gone or ctx ends
	libPending int        // requests passed to the library and not answered yet
	libGone    bool       // the library sends no more replies

	// The request loop owns the rest.
	files  map[string]*sftpFile
	nextID uint64
	reply  []byte
	users  map[uint32]string
	groups map[uint32]string
}

// sftpFile is a file handle of the filter's. Its handles start with "f";
// the library's are decimal numbers.
type sftpFile struct {
	f           *os.File
	read, write bool
	append      bool // writes go to the end, whatever the offset
}

func newSFTPFilter(ctx context.Context, client io.ReadWriter, lib io.Writer, workDir string) *sftpFilter {
	f := &sftpFilter{
		ctx:     ctx,
		client:  client,
		lib:     lib,
		workDir: workDir,
		files:   map[string]*sftpFile{},
		users:   map[uint32]string{},
		groups:  map[uint32]string{},
	}
	f.libIdle = sync.NewCond(&f.libMu)
	return f
}

// waitLibrary waits until the library has answered every request passed
// to it (or is gone, or ctx ended), so that a request the filter serves
// next sees their effects.
func (f *sftpFilter) waitLibrary() {
	f.libMu.Lock()
	defer f.libMu.Unlock()
	for f.libPending > 0 && !f.libGone && f.ctx.Err() == nil {
		f.libIdle.Wait()
	}
}

// libReplied counts one reply of the library's, or (gone) its end.
func (f *sftpFilter) libReplied(gone bool) {
	f.libMu.Lock()
	defer f.libMu.Unlock()
	if f.libPending > 0 {
		f.libPending--
	}
	f.libGone = f.libGone || gone
	if f.libPending == 0 || f.libGone {
		f.libIdle.Broadcast()
	}
}

// errSFTPMalformed ends a session whose client sent a packet that does not
// parse, as OpenSSH's sftp-server does.
var errSFTPMalformed = errors.New("malformed sftp packet")

// readFrame reads one SFTP packet, length prefix included, into *buf
// (grown as needed up to max). io.EOF means the stream ended between
// packets.
func readFrame(r io.Reader, buf *[]byte, max int) ([]byte, error) {
	if cap(*buf) < 4 {
		*buf = make([]byte, 4, 4<<10)
	}
	b := (*buf)[:4]
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(b)
	if n == 0 || n > uint32(max) {
		return nil, fmt.Errorf("%w: %d bytes long, at most %d", errSFTPMalformed, n, max)
	}
	if cap(b) < 4+int(n) {
		b = make([]byte, 4, 4+int(n))
		copy(b, (*buf)[:4])
		*buf = b
	}
	b = b[:4+n]
	if _, err := io.ReadFull(r, b[4:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// serveRequests reads the client's requests until the stream ends.
func (f *sftpFilter) serveRequests() error {
	// ctx's end wakes a wait for the library.
	stop := context.AfterFunc(f.ctx, func() {
		f.libMu.Lock()
		defer f.libMu.Unlock()
		f.libIdle.Broadcast()
	})
	defer stop()
	var buf []byte
	for {
		frame, err := readFrame(f.client, &buf, sftpMaxPacket)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read sftp request: %w", err)
		}
		handled, err := f.handle(frame[4:])
		if err != nil {
			return err
		}
		if !handled {
			// Every request gets exactly one reply from the library
			// (pkg/sftp answers even extensions it does not know).
			f.libMu.Lock()
			f.libPending++
			f.libMu.Unlock()
			if _, err := f.lib.Write(frame); err != nil {
				return fmt.Errorf("pass sftp request to pkg/sftp: %w", err)
			}
		}
	}
}

// pump passes the library's replies to the client, with the filter's
// extensions added to VERSION. After the client is gone it still reads,
// so that the library is never blocked and finishes.
func (f *sftpFilter) pump(from *io.PipeReader) error {
	defer f.libReplied(true)
	var buf []byte
	var werr error
	for {
		frame, err := readFrame(from, &buf, sftpMaxLibPacket)
		if err == nil {
			f.libReplied(false)
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
				return werr
			}
			// Makes the library's writes fail, so that it stops too.
			from.CloseWithError(err)
			return fmt.Errorf("read pkg/sftp reply: %w", err)
		}
		if frame[4] == fxpVersion {
			frame = withExtensions(frame)
		}
		if werr == nil {
			werr = f.send(frame)
		}
	}
}

// withExtensions is a VERSION packet with the filter's extensions added to
// the library's.
func withExtensions(frame []byte) []byte {
	has := map[string]bool{}
	d := sftpDecoder{b: frame[5:]}
	d.u32() // version
	for len(d.b) > 0 && !d.bad {
		has[d.str()] = true
		d.bytes()
	}
	out := append([]byte(nil), frame...)
	for _, e := range sftpExtensions {
		if !has[e[0]] {
			out = appendString(out, e[0])
			out = appendString(out, e[1])
		}
	}
	return out
}

// send writes a whole packet, frame[0:4] being room for its length.
func (f *sftpFilter) send(frame []byte) error {
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
	f.outMu.Lock()
	defer f.outMu.Unlock()
	if _, err := f.client.Write(frame); err != nil {
		return fmt.Errorf("write sftp reply: %w", err)
	}
	return nil
}

// begin starts a reply in the filter's buffer.
func (f *sftpFilter) begin(typ byte, id uint32) []byte {
	if f.reply == nil {
		f.reply = make([]byte, 0, 4<<10)
	}
	b := append(f.reply[:0], 0, 0, 0, 0, typ)
	return binary.BigEndian.AppendUint32(b, id)
}

// finish sends a reply begun with begin and keeps its buffer.
func (f *sftpFilter) finish(b []byte) error {
	f.reply = b[:0]
	return f.send(b)
}

func (f *sftpFilter) status(id uint32, err error) error {
	code, msg := sftpStatusOf(err)
	return f.statusMsg(id, code, msg)
}

func (f *sftpFilter) statusMsg(id, code uint32, msg string) error {
	b := f.begin(fxpStatus, id)
	b = binary.BigEndian.AppendUint32(b, code)
	b = appendString(b, msg)
	b = appendString(b, "") // language tag
	return f.finish(b)
}

// sftpStatusOf maps an error to an SFTP status code and message.
func sftpStatusOf(err error) (uint32, string) {
	switch {
	case err == nil:
		return fxOK, "Success"
	case errors.Is(err, io.EOF):
		return fxEOF, "End of file"
	case errors.Is(err, fs.ErrNotExist):
		return fxNoSuchFile, "No such file"
	case errors.Is(err, fs.ErrPermission):
		return fxPermission, "Permission denied"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fxFailure, pe.Err.Error()
	}
	return fxFailure, err.Error()
}

// handle serves one request if it is the filter's, and reports whether it
// was; the others go to the library.
func (f *sftpFilter) handle(body []byte) (bool, error) {
	typ := body[0]
	d := sftpDecoder{b: body[1:]}
	switch typ {
	case fxpOpen:
		id, name, pflags := d.u32(), d.str(), d.u32()
		a := d.attrs()
		if d.bad {
			return true, fmt.Errorf("%w: OPEN", errSFTPMalformed)
		}
		f.waitLibrary()
		return true, f.open(id, name, pflags, a)
	case fxpRead, fxpWrite, fxpFstat, fxpFsetstat, fxpClose:
		id, h := d.u32(), d.str()
		file, ok := f.files[h]
		if d.bad || !ok {
			return false, nil // the library's handle, or its error to report
		}
		f.waitLibrary()
		return true, f.onFile(typ, id, h, file, &d)
	case fxpExtended:
		id, name := d.u32(), d.str()
		if d.bad {
			return false, nil
		}
		switch name {
		case "posix-rename@openssh.com", "statvfs@openssh.com", "hardlink@openssh.com":
			return false, nil
		}
		f.waitLibrary()
		switch name {
		case "copy-data":
			return true, f.copyData(id, &d)
		case "fsync@openssh.com":
			h := d.str()
			if d.bad {
				return true, fmt.Errorf("%w: fsync", errSFTPMalformed)
			}
			file, ok := f.files[h]
			if !ok {
				return true, f.statusMsg(id, fxFailure, "invalid handle")
			}
			return true, f.status(id, file.f.Sync())
		case "limits@openssh.com":
			b := f.begin(fxpExtendedReply, id)
			b = binary.BigEndian.AppendUint64(b, sftpMaxPacket)
			b = binary.BigEndian.AppendUint64(b, sftpMaxData) // read length
			b = binary.BigEndian.AppendUint64(b, sftpMaxData) // write length
			b = binary.BigEndian.AppendUint64(b, sftpMaxHandles)
			return true, f.finish(b)
		case "users-groups-by-id@openssh.com":
			return true, f.usersGroups(id, &d)
		}
		// pkg/sftp answers an extension it does not know with success,
		// having done nothing.
		return true, f.statusMsg(id, fxOpUnsupported, "unsupported extension "+strconv.Quote(name))
	}
	return false, nil
}

func (f *sftpFilter) localPath(name string) string {
	if f.workDir != "" && !path.IsAbs(name) {
		return path.Join(f.workDir, name)
	}
	return name
}

// open serves OPEN as OpenSSH's sftp-server does: the permissions of the
// attributes (0666 without) for a file it creates, nothing else of them.
func (f *sftpFilter) open(id uint32, name string, pflags uint32, a sftpAttrs) error {
	if len(f.files) >= sftpMaxHandles {
		return f.statusMsg(id, fxFailure, fmt.Sprintf("too many open files (at most %d)", sftpMaxHandles))
	}
	file := &sftpFile{read: pflags&fxfRead != 0, write: pflags&fxfWrite != 0, append: pflags&fxfAppend != 0}
	var flag int
	switch {
	case file.read && file.write:
		flag = os.O_RDWR
	case file.write:
		flag = os.O_WRONLY
	default:
		flag, file.read = os.O_RDONLY, true
	}
	for _, m := range []struct {
		pflag uint32
		flag  int
	}{{fxfAppend, os.O_APPEND}, {fxfCreat, os.O_CREATE}, {fxfTrunc, os.O_TRUNC}, {fxfExcl, os.O_EXCL}} {
		if pflags&m.pflag != 0 {
			flag |= m.flag
		}
	}
	perm := fs.FileMode(0o666)
	if a.flags&attrPermissions != 0 {
		perm = fileMode(a.perm)
	}
	var err error
	if file.f, err = os.OpenFile(f.localPath(name), flag, perm); err != nil {
		return f.status(id, err)
	}
	f.nextID++
	h := "f" + strconv.FormatUint(f.nextID, 10)
	f.files[h] = file
	return f.finish(appendString(f.begin(fxpHandle, id), h))
}

// onFile serves a request on one of the filter's handles; d holds what
// follows the handle.
func (f *sftpFilter) onFile(typ byte, id uint32, h string, file *sftpFile, d *sftpDecoder) error {
	switch typ {
	case fxpRead:
		off, n := d.u64(), d.u32()
		if d.bad {
			return fmt.Errorf("%w: READ", errSFTPMalformed)
		}
		if off > math.MaxInt64 {
			return f.statusMsg(id, fxFailure, "offset out of range")
		}
		n = min(n, sftpMaxData)
		b := f.begin(fxpData, id)
		start := len(b) + 4
		b = slices.Grow(b, 4+int(n))[:start+int(n)]
		got, err := file.f.ReadAt(b[start:], int64(off))
		if got == 0 && err != nil {
			f.reply = b[:0]
			return f.status(id, err)
		}
		binary.BigEndian.PutUint32(b[start-4:], uint32(got))
		return f.finish(b[:start+got])
	case fxpWrite:
		off, data := d.u64(), d.bytes()
		if d.bad {
			return fmt.Errorf("%w: WRITE", errSFTPMalformed)
		}
		var err error
		switch {
		case file.append:
			_, err = file.f.Write(data)
		case off > math.MaxInt64:
			err = errors.New("offset out of range")
		default:
			_, err = file.f.WriteAt(data, int64(off))
		}
		return f.status(id, err)
	case fxpFstat:
		fi, err := file.f.Stat()
		if err != nil {
			return f.status(id, err)
		}
		return f.finish(appendAttrs(f.begin(fxpAttrs, id), fi))
	case fxpFsetstat:
		a := d.attrs()
		if d.bad {
			return fmt.Errorf("%w: FSETSTAT", errSFTPMalformed)
		}
		return f.status(id, setAttrs(file.f, a))
	case fxpClose:
		delete(f.files, h)
		return f.status(id, file.f.Close())
	}
	return fmt.Errorf("%w: unexpected type %d", errSFTPMalformed, typ)
}

// copyData serves copy-data (draft-ietf-secsh-filexfer-extensions-00,
// section 7; sftp's cp): the file's bytes never leave the node. A length
// of 0 copies to the end of the file. The request loop waits for it, as
// OpenSSH's sftp-server does; ctx ends it early.
func (f *sftpFilter) copyData(id uint32, d *sftpDecoder) error {
	rh, roff, rlen, wh, woff := d.str(), d.u64(), d.u64(), d.str(), d.u64()
	if d.bad {
		return fmt.Errorf("%w: copy-data", errSFTPMalformed)
	}
	src, ok1 := f.files[rh]
	dst, ok2 := f.files[wh]
	switch {
	case !ok1 || !ok2:
		return f.statusMsg(id, fxFailure, "invalid handle")
	case !src.read || !dst.write:
		return f.statusMsg(id, fxPermission, "copy-data needs a handle open for reading and one open for writing")
	case roff > math.MaxInt64 || woff > math.MaxInt64:
		return f.statusMsg(id, fxFailure, "offset out of range")
	}
	end := uint64(math.MaxUint64)
	if rlen != 0 && rlen <= math.MaxUint64-roff {
		end = roff + rlen
	}
	if rh == wh && roff <= woff && woff < end {
		return f.statusMsg(id, fxFailure, "copy-data ranges overlap")
	}
	buf := make([]byte, sftpMaxData)
	var err error
	for roff < end && err == nil {
		if err = f.ctx.Err(); err != nil {
			break
		}
		chunk := buf[:min(uint64(len(buf)), end-roff)]
		n, rerr := src.f.ReadAt(chunk, int64(roff))
		if n > 0 {
			if dst.append {
				_, err = dst.f.Write(chunk[:n])
			} else {
				_, err = dst.f.WriteAt(chunk[:n], int64(woff))
			}
			roff, woff = roff+uint64(n), woff+uint64(n)
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if err == nil {
			err = rerr
		}
	}
	return f.status(id, err)
}

// usersGroups serves users-groups-by-id@openssh.com, with which OpenSSH's
// sftp (9.1 and later) shows owner and group names in ls -l: two lists of
// ids in, two lists of names out, "" for an id without a name.
func (f *sftpFilter) usersGroups(id uint32, d *sftpDecoder) error {
	uids, gids := d.bytes(), d.bytes()
	if d.bad || len(uids)%4 != 0 || len(gids)%4 != 0 {
		return f.statusMsg(id, fxBadMessage, "malformed users-groups-by-id request")
	}
	if len(uids)/4 > sftpMaxIDs || len(gids)/4 > sftpMaxIDs {
		return f.statusMsg(id, fxFailure, fmt.Sprintf("at most %d ids of each kind", sftpMaxIDs))
	}
	names := func(ids []byte, cache map[uint32]string, lookup func(string) string) []byte {
		var out []byte
		for i := 0; i < len(ids); i += 4 {
			n := binary.BigEndian.Uint32(ids[i:])
			name, ok := cache[n]
			if !ok {
				name = lookup(strconv.FormatUint(uint64(n), 10))
				if len(cache) < sftpNameCache {
					cache[n] = name
				}
			}
			out = appendString(out, name)
		}
		return out
	}
	b := f.begin(fxpExtendedReply, id)
	b = appendString(b, string(names(uids, f.users, func(id string) string {
		if u, err := user.LookupId(id); err == nil {
			return u.Username
		}
		return ""
	})))
	b = appendString(b, string(names(gids, f.groups, func(id string) string {
		if g, err := user.LookupGroupId(id); err == nil {
			return g.Name
		}
		return ""
	})))
	return f.finish(b)
}

func (f *sftpFilter) closeFiles() {
	for h, file := range f.files {
		file.f.Close()
		delete(f.files, h)
	}
}

// sftpAttrs are the ATTRS of version 3.
type sftpAttrs struct {
	flags        uint32
	size         uint64
	uid, gid     uint32
	perm         uint32
	atime, mtime uint32
}

// setAttrs applies attributes to a file in the order OpenSSH's
// sftp-server does, stopping at the first failure.
func setAttrs(f *os.File, a sftpAttrs) error {
	if a.flags&attrSize != 0 {
		if a.size > math.MaxInt64 {
			return errors.New("size out of range")
		}
		if err := f.Truncate(int64(a.size)); err != nil {
			return err
		}
	}
	if a.flags&attrPermissions != 0 {
		if err := f.Chmod(fileMode(a.perm)); err != nil {
			return err
		}
	}
	if a.flags&attrACModTime != 0 {
		rc, err := f.SyscallConn()
		if err != nil {
			return err
		}
		tv := []syscall.Timeval{
			syscall.NsecToTimeval(time.Unix(int64(a.atime), 0).UnixNano()),
			syscall.NsecToTimeval(time.Unix(int64(a.mtime), 0).UnixNano()),
		}
		var uerr error
		if err := rc.Control(func(fd uintptr) { uerr = syscall.Futimes(int(fd), tv) }); err != nil {
			return err
		}
		if uerr != nil {
			return &fs.PathError{Op: "futimes", Path: f.Name(), Err: uerr}
		}
	}
	if a.flags&attrUIDGID != 0 {
		if err := f.Chown(int(a.uid), int(a.gid)); err != nil {
			return err
		}
	}
	return nil
}

// fileMode is the os.FileMode of POSIX permission bits.
func fileMode(perm uint32) fs.FileMode {
	m := fs.FileMode(perm & 0o777)
	if perm&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if perm&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if perm&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// posixMode is the st_mode of an os.FileMode, for systems whose FileInfo
// carries no syscall.Stat_t.
func posixMode(m fs.FileMode) uint32 {
	p := uint32(m.Perm())
	for _, s := range []struct {
		mode fs.FileMode
		bit  uint32
	}{{fs.ModeSetuid, 0o4000}, {fs.ModeSetgid, 0o2000}, {fs.ModeSticky, 0o1000}} {
		if m&s.mode != 0 {
			p |= s.bit
		}
	}
	switch {
	case m.IsDir():
		p |= posixDir
	case m&fs.ModeSymlink != 0:
		p |= posixSymlink
	case m&fs.ModeNamedPipe != 0:
		p |= posixFIFO
	case m&fs.ModeSocket != 0:
		p |= posixSocket
	case m&fs.ModeCharDevice != 0:
		p |= posixCharDevice
	case m&fs.ModeDevice != 0:
		p |= posixBlockDevice
	default:
		p |= posixRegular
	}
	return p
}

// appendAttrs appends the ATTRS of fi: size, owner, mode and times.
func appendAttrs(b []byte, fi fs.FileInfo) []byte {
	uid, gid, mode := uint32(0), uint32(0), posixMode(fi.Mode())
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		uid, gid, mode = st.Uid, st.Gid, uint32(st.Mode)
	}
	b = binary.BigEndian.AppendUint32(b, attrSize|attrUIDGID|attrPermissions|attrACModTime)
	b = binary.BigEndian.AppendUint64(b, uint64(fi.Size()))
	b = binary.BigEndian.AppendUint32(b, uid)
	b = binary.BigEndian.AppendUint32(b, gid)
	b = binary.BigEndian.AppendUint32(b, mode)
	b = binary.BigEndian.AppendUint32(b, uint32(fileAtime(fi).Unix()))
	return binary.BigEndian.AppendUint32(b, uint32(fi.ModTime().Unix()))
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// sftpDecoder reads the fields of a packet; any short read sets bad and
// makes every later read return zero values.
type sftpDecoder struct {
	b   []byte
	bad bool
}

func (d *sftpDecoder) u32() uint32 {
	if d.bad || len(d.b) < 4 {
		d.bad = true
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *sftpDecoder) u64() uint64 {
	if d.bad || len(d.b) < 8 {
		d.bad = true
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *sftpDecoder) bytes() []byte {
	n := d.u32()
	if d.bad || uint64(n) > uint64(len(d.b)) {
		d.bad = true
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *sftpDecoder) str() string { return string(d.bytes()) }

func (d *sftpDecoder) attrs() sftpAttrs {
	var a sftpAttrs
	a.flags = d.u32()
	if a.flags&attrSize != 0 {
		a.size = d.u64()
	}
	if a.flags&attrUIDGID != 0 {
		a.uid, a.gid = d.u32(), d.u32()
	}
	if a.flags&attrPermissions != 0 {
		a.perm = d.u32()
	}
	if a.flags&attrACModTime != 0 {
		a.atime, a.mtime = d.u32(), d.u32()
	}
	if a.flags&attrExtended != 0 {
		// Each pair takes at least 8 bytes, so the packet bounds the loop.
		for n := d.u32(); n > 0 && !d.bad; n-- {
			d.bytes()
			d.bytes()
		}
	}
	return a
}
