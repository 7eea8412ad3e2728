package peer

import (
	"bytes"
	"testing"
)

// TestMarshalOverwritesReusedBuffers: the frame pool hands buffers out as
// they were left (no zeroing), so every frame Marshal returns must hold
// exactly its type and payload, whatever a buffer held before, and no
// byte more.
func TestMarshalOverwritesReusedBuffers(t *testing.T) {
	// Fill pooled buffers with junk, as frames of other sessions leave them.
	for range 4 {
		bp := framePool.Get(maxFrame)
		for i := range *bp {
			(*bp)[i] = 0xA5
		}
		framePool.Put(bp)
	}
	for _, n := range []int{MaxFrameData, MaxFrameData - 1, 4 << 10, 1025} {
		payload := bytes.Repeat([]byte{byte(n)}, n)
		bs, err := rawCodec{}.Marshal(&outFrame{typ: frameData, payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		got := bs.Materialize()
		if len(got) != 1+n || got[0] != frameData || !bytes.Equal(got[1:], payload) {
			t.Errorf("frame of %d bytes: got %d bytes, type %q, payload intact %v", n, len(got), got[0], len(got) == 1+n && bytes.Equal(got[1:], payload))
		}
		bs.Free()
	}
	if _, err := (rawCodec{}).Marshal(&outFrame{typ: frameData, payload: make([]byte, MaxFrameData+1)}); err == nil {
		t.Error("a frame over maxFrame was marshalled")
	}
	// A buffer of another size is not kept: Get always returns maxFrame's.
	odd := make([]byte, 100)
	framePool.Put(&odd)
	for range 8 {
		bp := framePool.Get(10)
		if cap(*bp) < 10 || len(*bp) != 10 {
			t.Fatalf("Get(10): len %d cap %d", len(*bp), cap(*bp))
		}
		if cap(*bp) == 100 {
			t.Fatal("the pool kept a buffer of another size")
		}
		framePool.Put(bp)
	}
}
