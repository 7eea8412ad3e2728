package audit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/bits"
	"os"
)

// checkFile checks the structure of the bbolt file at path before bbolt
// maps it, and returns the first damage it finds.
//
// bbolt trusts its file: a page id, an element offset or a freelist count
// read from a damaged page is followed or allocated as is, which ends in a
// panic, in a slice past the mapping (a fault, which Go cannot recover
// outside the goroutine that has debug.SetPanicOnFault), or, worse, in pages
// handed out twice. bbolt's own Tx.Check follows pointers the same way, in a
// goroutine of its own, so it can itself crash the process on the damage it
// is meant to find. checkFile therefore reads the file with ReadAt into
// bounds-checked slices and verifies what bbolt relies on, in the order
// bbolt reads it:
//
//   - the meta pages, chosen as bbolt chooses them (checksum, then txid);
//   - the high-water mark against the file's size, so that a truncated file
//     is refused rather than grown back with zeros by the next commit;
//   - the freelist page: its type, its size and every id in it;
//   - every page reachable from the root bucket, sub-buckets and inline
//     buckets included: its id, its type, that it lies below the high-water
//     mark, that it is neither used twice nor also free, that its elements
//     lie inside it, and that keys are in order (what Tx.Check verifies).
//
// It does not report pages that are neither reachable nor free, which bbolt
// check calls "unreachable unfreed": that leaks space but misleads no read
// or write. Its cost is one read of every page in use (see the package
// comment for the figure).
//
// It returns a note, not an error, when one meta page is damaged and the
// other is used: bbolt then serves the state before the last commit, which
// is also what a crash in the middle of a commit leaves.
func checkFile(path string) (note string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	c := &checker{f: f, size: fi.Size()}
	// checkFile indexes only bounds-checked slices, so a panic here is a
	// bug in it; it still must not take the proxy down.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("checking its structure failed: %v", r)
		}
	}()
	err = c.check()
	return c.note, err
}

// The on-disk layout of bbolt 1.x (format version 2), from
// go.etcd.io/bbolt/internal/common: every page starts with a 16-byte header
// (id uint64, flags uint16, count uint16, overflow uint32), little-endian on
// the machines Warren runs on.
const (
	pageHeaderSize = 16
	elementSize    = 16 // a branch element (pos, ksize uint32, pgid uint64) or a leaf one (flags, pos, ksize, vsize uint32)
	bucketHeader   = 16 // a bucket value: root pgid uint64, sequence uint64; an inline page follows when root is 0

	branchPage   = 0x01
	leafPage     = 0x02
	metaPage     = 0x04
	freelistPage = 0x10
	bucketLeaf   = 0x01 // leaf element flag: the value is a bucket

	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	noFreelist     = ^uint64(0)
	metaSize       = 64 // magic..checksum
	metaSumOffset  = 56 // the checksum covers the meta up to here
	minPageSize    = 1024
	maxPageSize    = 1 << 24
	maxKeySizeShow = 32 // bytes of a key shown in an error
)

// rootBucket names the root bucket in messages; the others are named by
// their keys.
const rootBucket = "root bucket"

type meta struct {
	pageSize           uint32
	root, freelist, hw uint64 // hw: high-water mark, the first page id not in use
	txid               uint64
}

// parseMeta decodes a meta page's payload (after the page header) and
// validates it as bbolt's Meta.Validate does.
func parseMeta(b []byte) (meta, error) {
	if len(b) < metaSize {
		return meta{}, errors.New("meta page is short")
	}
	le := binary.LittleEndian
	switch {
	case le.Uint32(b[0:]) != boltMagic:
		return meta{}, errors.New("not a bbolt meta page (bad magic)")
	case le.Uint32(b[4:]) != boltVersion:
		return meta{}, fmt.Errorf("bbolt format version %d, want %d", le.Uint32(b[4:]), boltVersion)
	}
	h := fnv.New64a()
	h.Write(b[:metaSumOffset])
	if h.Sum64() != le.Uint64(b[metaSumOffset:]) {
		return meta{}, errors.New("meta page checksum mismatch")
	}
	return meta{
		pageSize: le.Uint32(b[8:]),
		root:     le.Uint64(b[16:]),
		freelist: le.Uint64(b[32:]),
		hw:       le.Uint64(b[40:]),
		txid:     le.Uint64(b[48:]),
	}, nil
}

type checker struct {
	f    *os.File
	size int64
	ps   uint64 // page size
	hw   uint64 // high-water mark, in pages

	used, free []bool   // by page id, below hw
	bufs       [][]byte // page buffers, by depth in the tree
	note       string   // see checkFile
}

func (c *checker) readAt(off, n uint64) ([]byte, error) {
	if off > uint64(c.size) || n > uint64(c.size)-off {
		return nil, fmt.Errorf("%d bytes at offset %d lie past the end of the file (%d bytes)", n, off, c.size)
	}
	b := make([]byte, n)
	if _, err := c.f.ReadAt(b, int64(off)); err != nil && !(errors.Is(err, io.EOF) && n == 0) {
		return nil, fmt.Errorf("read %d bytes at offset %d: %w", n, off, err)
	}
	return b, nil
}

func (c *checker) check() error {
	m, err := c.meta()
	if err != nil {
		return err
	}
	c.hw = m.hw
	if c.hw < 4 || c.hw > uint64(c.size)/c.ps {
		if c.hw >= 4 && c.hw <= ^uint64(0)/c.ps {
			return fmt.Errorf("the file is %d bytes but its pages reach byte %d: it was truncated", c.size, c.hw*c.ps)
		}
		return fmt.Errorf("the meta page's high-water mark (%d pages) is impossible", c.hw)
	}
	c.used, c.free = make([]bool, c.hw), make([]bool, c.hw)
	c.used[0], c.used[1] = true, true // the meta pages
	if err := c.freelist(m.freelist); err != nil {
		return err
	}
	if m.root < 2 || m.root >= c.hw {
		return fmt.Errorf("the root bucket's page %d is outside the file's pages [2, %d)", m.root, c.hw)
	}
	return c.page(m.root, 0, nil, nil, rootBucket)
}

// meta finds the page size (c.ps) and the meta page bbolt will use, as
// bbolt's getPageSize, mmap and meta do.
func (c *checker) meta() (meta, error) {
	first, err := c.readAt(0, min(uint64(c.size), 4096))
	if err != nil {
		return meta{}, err
	}
	var ps uint64
	if len(first) >= pageHeaderSize {
		if m, err := parseMeta(first[pageHeaderSize:]); err == nil {
			ps = uint64(m.pageSize)
		}
	}
	for i := 0; ps == 0 && i <= 14; i++ {
		pos := int64(1024) << i
		if pos >= c.size-1024 {
			break
		}
		b, err := c.readAt(uint64(pos), min(uint64(c.size-pos), 4096))
		if err != nil {
			return meta{}, err
		}
		if m, err := parseMeta(b[pageHeaderSize:]); err == nil {
			ps = uint64(m.pageSize)
		}
	}
	if ps == 0 {
		return meta{}, errors.New("neither meta page is valid")
	}
	if ps < minPageSize || ps > maxPageSize || bits.OnesCount64(ps) != 1 {
		return meta{}, fmt.Errorf("the meta page's page size %d is impossible", ps)
	}
	if uint64(c.size) < 2*ps {
		return meta{}, fmt.Errorf("the file is %d bytes, less than its two meta pages", c.size)
	}
	c.ps = ps
	var ms [2]meta
	var errs [2]error
	for i := range ms {
		b, err := c.readAt(uint64(i)*ps, pageHeaderSize+metaSize)
		if err != nil {
			return meta{}, err
		}
		ms[i], errs[i] = parseMeta(b[pageHeaderSize:])
	}
	// bbolt uses the meta with the higher txid if it is valid, else the
	// other one.
	a, b := 0, 1
	if ms[1].txid > ms[0].txid {
		a, b = 1, 0
	}
	switch {
	case errs[a] == nil:
		if errs[b] != nil {
			c.note = fmt.Sprintf("meta page %d is damaged (%v); the other, of the latest commit, is used", b, errs[b])
		}
		return ms[a], nil
	case errs[b] == nil:
		c.note = fmt.Sprintf("meta page %d is damaged (%v); the other is used, so the last commit before it was damaged may be lost", a, errs[a])
		return ms[b], nil
	}
	return meta{}, fmt.Errorf("neither meta page is valid: %w", errors.Join(errs[0], errs[1]))
}

// freelist checks the freelist page and marks the free pages.
func (c *checker) freelist(id uint64) error {
	if id == noFreelist {
		// bbolt rebuilds the freelist from the reachable pages, which
		// the walk checks.
		return nil
	}
	if id < 2 || id >= c.hw {
		return fmt.Errorf("the freelist page %d is outside the file's pages [2, %d)", id, c.hw)
	}
	hdr, err := c.readAt(id*c.ps, pageHeaderSize)
	if err != nil {
		return fmt.Errorf("freelist page %d: %w", id, err)
	}
	le := binary.LittleEndian
	gotID, flags, count, overflow := le.Uint64(hdr), le.Uint16(hdr[8:]), uint64(le.Uint16(hdr[10:])), uint64(le.Uint32(hdr[12:]))
	switch {
	case gotID != id:
		return fmt.Errorf("freelist page %d identifies itself as page %d: it was overwritten", id, gotID)
	case flags != freelistPage:
		return fmt.Errorf("freelist page %d has type %#x, not freelist", id, flags)
	case overflow >= c.hw-id:
		return fmt.Errorf("freelist page %d runs past the last page (%d more pages)", id, overflow)
	}
	for i := id; i <= id+overflow; i++ {
		c.used[i] = true
	}
	p, err := c.readAt(id*c.ps, (overflow+1)*c.ps)
	if err != nil {
		return fmt.Errorf("freelist page %d: %w", id, err)
	}
	ids := p[pageHeaderSize:]
	if count == 0xFFFF {
		// A long list stores its length in its first element.
		if len(ids) < 8 {
			return fmt.Errorf("freelist page %d is too small for its count", id)
		}
		count, ids = le.Uint64(ids), ids[8:]
	}
	if count > uint64(len(ids))/8 {
		return fmt.Errorf("freelist page %d claims %d ids, more than it holds", id, count)
	}
	for i := range count {
		pg := le.Uint64(ids[i*8:])
		switch {
		case pg < 2 || pg >= c.hw:
			return fmt.Errorf("freelist page %d lists page %d, outside the file's pages [2, %d)", id, pg, c.hw)
		case c.free[pg]:
			return fmt.Errorf("freelist page %d lists page %d twice", id, pg)
		case c.used[pg]:
			return fmt.Errorf("freelist page %d lists itself (page %d) as free", id, pg)
		}
		c.free[pg] = true
	}
	return nil
}

// where names a page for messages: the bucket it belongs to and its id,
// or "inline" for an inline bucket's page, which has none.
type where struct {
	bucket string
	page   uint64 // 0: inline
}

func (w where) String() string {
	if w.page == 0 {
		return w.bucket + ": inline page"
	}
	return fmt.Sprintf("%s: page %d", w.bucket, w.page)
}

// read reads n bytes at off into *buf, reusing its memory: one buffer per
// depth of the tree (c.bufs) serves every page at that depth, so that
// checking a million events allocates a few buffers, not a million keys.
func (c *checker) read(buf *[]byte, off, n uint64) ([]byte, error) {
	if off > uint64(c.size) || n > uint64(c.size)-off {
		return nil, fmt.Errorf("%d bytes at offset %d lie past the end of the file (%d bytes)", n, off, c.size)
	}
	if uint64(cap(*buf)) < n {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	if _, err := c.f.ReadAt(b, int64(off)); err != nil {
		return nil, fmt.Errorf("read %d bytes at offset %d: %w", n, off, err)
	}
	return b, nil
}

// page checks page id of bucket (named for messages) and what it reaches.
// Its keys must lie in [lo, hi), nil meaning no bound, as its parent's
// branch element says. depth is its distance from the root page and picks
// the buffer it is read into; lo and hi live in the parent's buffer.
func (c *checker) page(id uint64, depth int, lo, hi []byte, bucket string) error {
	w := where{bucket, id}
	if id < 2 || id >= c.hw {
		return fmt.Errorf("%s: a branch points to page %d, outside the file's pages [2, %d)", bucket, id, c.hw)
	}
	if depth >= len(c.bufs) {
		c.bufs = append(c.bufs, nil)
	}
	p, err := c.read(&c.bufs[depth], id*c.ps, c.ps)
	if err != nil {
		return fmt.Errorf("%v: %w", w, err)
	}
	le := binary.LittleEndian
	gotID, flags, overflow := le.Uint64(p), le.Uint16(p[8:]), uint64(le.Uint32(p[12:]))
	switch {
	case gotID != id:
		return fmt.Errorf("%v identifies itself as page %d: it was zeroed or overwritten", w, gotID)
	case flags != branchPage && flags != leafPage:
		return fmt.Errorf("%v has type %#x, neither branch nor leaf", w, flags)
	case overflow >= c.hw-id:
		return fmt.Errorf("%v runs past the last page (%d more pages)", w, overflow)
	}
	for i := id; i <= id+overflow; i++ {
		switch {
		case c.free[i]:
			return fmt.Errorf("%s: page %d is in use and also in the freelist", bucket, i)
		case c.used[i]:
			return fmt.Errorf("%s: page %d is used twice", bucket, i)
		}
		c.used[i] = true
	}
	if overflow > 0 {
		if p, err = c.read(&c.bufs[depth], id*c.ps, (overflow+1)*c.ps); err != nil {
			return fmt.Errorf("%v: %w", w, err)
		}
	}
	if flags == leafPage {
		return c.leaf(p, depth, lo, hi, w)
	}
	count := int(le.Uint16(p[10:]))
	if count == 0 {
		return fmt.Errorf("%v: branch page with no elements", w)
	}
	if err := fits(p, count, w); err != nil {
		return err
	}
	var prev []byte
	for i := range count {
		key, _, child, err := element(p, i, w)
		if err != nil {
			return err
		}
		if err := inOrder(prev, key, lo, hi, i, w); err != nil {
			return err
		}
		prev = key
		next := hi
		if i+1 < count {
			if next, _, _, err = element(p, i+1, w); err != nil {
				return err
			}
		}
		if err := c.page(binary.LittleEndian.Uint64(child), depth+1, key, next, bucket); err != nil {
			return err
		}
	}
	return nil
}

// leaf checks a leaf page p (a file page or an inline bucket's page) and
// the buckets it holds.
func (c *checker) leaf(p []byte, depth int, lo, hi []byte, w where) error {
	if len(p) < pageHeaderSize {
		return fmt.Errorf("%v is %d bytes, shorter than its header", w, len(p))
	}
	count := int(binary.LittleEndian.Uint16(p[10:]))
	if err := fits(p, count, w); err != nil {
		return err
	}
	var prev []byte
	for i := range count {
		key, value, flags, err := element(p, i, w)
		if err != nil {
			return err
		}
		if err := inOrder(prev, key, lo, hi, i, w); err != nil {
			return err
		}
		prev = key
		if binary.LittleEndian.Uint32(flags)&bucketLeaf == 0 {
			continue
		}
		child := "bucket " + showKey(key)
		if w.bucket != rootBucket {
			child = w.bucket + "/" + showKey(key)
		}
		if len(value) < bucketHeader {
			return fmt.Errorf("%v: bucket %s: its header is %d bytes, want %d", w, child, len(value), bucketHeader)
		}
		if root := binary.LittleEndian.Uint64(value); root != 0 {
			if err := c.page(root, depth+1, nil, nil, child); err != nil {
				return err
			}
			continue
		}
		inline := value[bucketHeader:]
		if len(inline) < pageHeaderSize || binary.LittleEndian.Uint16(inline[8:]) != leafPage {
			return fmt.Errorf("%v: inline bucket %s is not a leaf page", w, child)
		}
		if err := c.leaf(inline, depth, nil, nil, where{child, 0}); err != nil {
			return err
		}
	}
	return nil
}

// fits checks that count elements fit in page p after its header.
func fits(p []byte, count int, w where) error {
	if uint64(count)*elementSize > uint64(len(p)-pageHeaderSize) {
		return fmt.Errorf("%v: %d elements do not fit in its %d bytes", w, count, len(p))
	}
	return nil
}

// element returns the i-th element of page p, which fits checked: its key,
// and for a leaf its value and its flags (4 bytes), for a branch the child's
// page id (8 bytes) and no value. It checks that the key and value lie
// inside p: an element's pos is relative to the element itself.
func element(p []byte, i int, w where) (key, value, extra []byte, err error) {
	le := binary.LittleEndian
	off := uint64(pageHeaderSize + i*elementSize)
	e := p[off : off+elementSize]
	var pos, ksize, vsize uint64
	if le.Uint16(p[8:]) == branchPage {
		pos, ksize, extra = uint64(le.Uint32(e)), uint64(le.Uint32(e[4:])), e[8:16]
	} else {
		extra = e[0:4]
		pos, ksize, vsize = uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
	}
	start := off + pos
	if start+ksize+vsize > uint64(len(p)) {
		return nil, nil, nil, fmt.Errorf("%v: element %d lies past the end of the page", w, i)
	}
	return p[start : start+ksize], p[start+ksize : start+ksize+vsize], extra, nil
}

// inOrder checks the i-th key of a page against the one before it and the
// bounds its parent set, as Tx.Check does.
func inOrder(prev, key, lo, hi []byte, i int, w where) error {
	switch {
	case i > 0 && bytes.Compare(prev, key) >= 0:
		return fmt.Errorf("%v: key %d (%s) is not after key %d (%s)", w, i, showKey(key), i-1, showKey(prev))
	case i == 0 && lo != nil && bytes.Compare(key, lo) < 0:
		return fmt.Errorf("%v: first key (%s) is before its parent's (%s)", w, showKey(key), showKey(lo))
	case hi != nil && bytes.Compare(key, hi) >= 0:
		return fmt.Errorf("%v: key %d (%s) is not before the next key of its parent (%s)", w, i, showKey(key), showKey(hi))
	}
	return nil
}

// showKey prints a key for an error message: as text if it is short
// printable ASCII, else as hex, cut to maxKeySizeShow bytes.
func showKey(k []byte) string {
	cut := k[:min(len(k), maxKeySizeShow)]
	more := ""
	if len(cut) < len(k) {
		more = "…"
	}
	for _, b := range cut {
		if b < 0x20 || b > 0x7e {
			return fmt.Sprintf("%x%s", cut, more)
		}
	}
	return fmt.Sprintf("%q%s", cut, more)
}
