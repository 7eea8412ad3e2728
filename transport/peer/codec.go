package peer

import (
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// StreamMethod is the full gRPC method name of a data stream.
const StreamMethod = "/warren.peer.v1.Peer/Stream"

// Version is the data-stream protocol version sent in hello and accept.
const Version = 1

const (
	// MaxFrameData is the largest payload of one data frame; longer Writes
	// are split.
	MaxFrameData = 32 << 10
	// maxFrame is the largest frame on the wire: type byte plus payload.
	maxFrame = 1 + MaxFrameData
	// maxTokenLen bounds the hello's token.
	maxTokenLen = 1024

	// codecName is the content-subtype of data streams.
	codecName = "warren-raw"
)

// Frame types, the first byte of every frame (see the package doc).
const (
	frameHello  byte = 'H' // client→server: version:uint8 token:bytes
	frameAccept byte = 'A' // server→client: version:uint8
	frameData   byte = 'D' // both ways: payload, 1..MaxFrameData bytes
	frameEOF    byte = 'E' // server→client: no payload; no data follows
)

func init() { encoding.RegisterCodecV2(rawCodec{}) }

// outFrame is what SendMsg takes on a data stream. The codec copies it, so
// the caller may reuse payload as soon as SendMsg returns (io.Writer's
// contract), even though gRPC writes the bytes later.
type outFrame struct {
	typ     byte
	payload []byte
}

// inFrame is what RecvMsg fills on a data stream. It holds a reference to
// gRPC's receive buffer instead of copying it; Read copies straight from it
// into the caller's slice and frees it as it goes.
type inFrame struct {
	r mem.Reader
}

// rawCodec puts frames on the wire as they are. It is registered globally
// under its own content-subtype, so it never touches protoactor's protobuf
// traffic on the same server.
type rawCodec struct{}

func (rawCodec) Name() string { return codecName }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*outFrame)
	if !ok {
		return nil, fmt.Errorf("peer codec: cannot marshal %T", v)
	}
	n := 1 + len(f.payload)
	if n > maxFrame {
		return nil, fmt.Errorf("peer codec: frame of %d bytes exceeds %d", n, maxFrame)
	}
	if mem.IsBelowBufferPoolingThreshold(n) {
		b := make([]byte, n)
		b[0] = f.typ
		copy(b[1:], f.payload)
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	bp := framePool.Get(n)
	(*bp)[0] = f.typ
	copy((*bp)[1:], f.payload)
	return mem.BufferSlice{mem.NewBuffer(bp, framePool)}, nil
}

// framePool holds the buffers of outgoing frames, each of maxFrame
// bytes, and hands them out as they were left: Marshal writes every byte
// of what it takes. gRPC's default pool would round a full frame (32 KiB
// and its type byte) up to a 64 KiB buffer and zero all of it on every
// Get: a quarter of the entry proxy's CPU during an upload through a peer
// (the path benchmark's profile).
var framePool mem.BufferPool = &frameBuffers{}

type frameBuffers struct{ pool sync.Pool }

func (p *frameBuffers) Get(n int) *[]byte {
	if n > maxFrame {
		b := make([]byte, n)
		return &b
	}
	bp, ok := p.pool.Get().(*[]byte)
	if !ok {
		b := make([]byte, maxFrame)
		bp = &b
	}
	*bp = (*bp)[:n]
	return bp
}

func (p *frameBuffers) Put(bp *[]byte) {
	if cap(*bp) == maxFrame {
		p.pool.Put(bp)
	}
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*inFrame)
	if !ok {
		return fmt.Errorf("peer codec: cannot unmarshal into %T", v)
	}
	n := data.Len()
	if n == 0 {
		return errors.New("peer codec: empty frame")
	}
	if n > maxFrame {
		return fmt.Errorf("peer codec: frame of %d bytes exceeds %d", n, maxFrame)
	}
	f.r.Reset(data) // takes its own reference; gRPC frees data on return
	return nil
}

// next returns the type of the frame just received and leaves the reader at
// its payload.
func (f *inFrame) next() byte {
	b, _ := f.r.ReadByte() // Unmarshal refused empty frames
	return b
}

// readAll copies the rest of the frame out, for the small hello and accept.
func (f *inFrame) readAll() []byte {
	b := make([]byte, f.r.Remaining())
	_, _ = f.r.Read(b)
	return b
}

// discard frees what is left of the current frame.
func (f *inFrame) discard() { _ = f.r.Close() }
