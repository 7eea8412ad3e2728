package resume

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/warren-proxy/warren/internal/model"
)

const (
	magic = "WRS1"

	modeStart  byte = 1
	modeResume byte = 2

	statusOK      byte = 0
	statusRefused byte = 1

	fData  byte = 1
	fAck   byte = 2
	fFin   byte = 3
	fPing  byte = 4
	fClose byte = 5
	fNote  byte = 6

	// maxNote bounds a note's text.
	maxNote = 512

	// maxData is the most bytes one data frame carries.
	maxData = 32 << 10
	// maxID bounds a session id, as proxies make them.
	maxID = 64
	// maxMsg bounds a Welcome's refusal.
	maxMsg = 512
	// TokenSize is the size of a session's secret and of a resume token.
	TokenSize = 32

	// DefaultWindow is a session's window each way when the entry proxy
	// asks for none: 4 MiB keeps one session across regions (150 ms,
	// 200 Mbit/s: a bandwidth-delay product of 3.75 MB) at the path's rate.
	DefaultWindow = 4 << 20
	// MaxWindow is the largest window an agent grants.
	MaxWindow = 16 << 20
	minWindow = 64 << 10
	// MaxDetach is the longest an agent holds a detached session.
	MaxDetach = 10 * time.Minute

	helloFixed   = len(magic) + 1 + 1 + 8 + 4 + 4 + 4 + TokenSize
	welcomeFixed = len(magic) + 1 + 8 + 2
)

// hello opens a hop.
type hello struct {
	mode     byte
	id       string
	received uint64
	window   uint32
	detach   time.Duration
	gen      uint32
	token    [TokenSize]byte
}

func (h hello) marshal() []byte {
	b := make([]byte, 0, helloFixed+len(h.id))
	b = append(b, magic...)
	b = append(b, h.mode, byte(len(h.id)))
	b = append(b, h.id...)
	b = binary.BigEndian.AppendUint64(b, h.received)
	b = binary.BigEndian.AppendUint32(b, h.window)
	b = binary.BigEndian.AppendUint32(b, uint32(h.detach/time.Millisecond))
	b = binary.BigEndian.AppendUint32(b, h.gen)
	return append(b, h.token[:]...)
}

// readHello reads and checks a Hello; every field from the network is
// checked before anything looks it up.
func readHello(r io.Reader) (hello, error) {
	var h hello
	head := make([]byte, len(magic)+2)
	if _, err := io.ReadFull(r, head); err != nil {
		return h, fmt.Errorf("read hello: %w", err)
	}
	if string(head[:len(magic)]) != magic {
		return h, fmt.Errorf("not a resumable stream (it starts with %s)", strconv.Quote(string(head[:len(magic)])))
	}
	h.mode = head[len(magic)]
	if h.mode != modeStart && h.mode != modeResume {
		return h, fmt.Errorf("hello: unknown mode %d", h.mode)
	}
	idLen := int(head[len(magic)+1])
	if idLen == 0 || idLen > maxID {
		return h, fmt.Errorf("hello: session id of %d bytes (want 1 to %d)", idLen, maxID)
	}
	rest := make([]byte, idLen+8+4+4+4+TokenSize)
	if _, err := io.ReadFull(r, rest); err != nil {
		return h, fmt.Errorf("read hello: %w", err)
	}
	h.id = string(rest[:idLen])
	if !model.ValidName(h.id) {
		return h, fmt.Errorf("hello: invalid session id %s", model.Quote(h.id))
	}
	p := rest[idLen:]
	h.received = binary.BigEndian.Uint64(p)
	h.window = binary.BigEndian.Uint32(p[8:])
	h.detach = time.Duration(binary.BigEndian.Uint32(p[12:])) * time.Millisecond
	h.gen = binary.BigEndian.Uint32(p[16:])
	copy(h.token[:], p[20:])
	switch {
	case h.mode == modeStart && (h.received != 0 || h.gen != 0):
		return h, errors.New("hello: a new session with bytes already received")
	case h.mode == modeResume && h.gen == 0:
		return h, errors.New("hello: a resume without an attempt number")
	}
	return h, nil
}

type welcome struct {
	status   byte
	received uint64
	msg      string
}

func (w welcome) marshal() []byte {
	msg := w.msg
	if len(msg) > maxMsg {
		msg = msg[:maxMsg]
	}
	b := make([]byte, 0, welcomeFixed+len(msg))
	b = append(b, magic...)
	b = append(b, w.status)
	b = binary.BigEndian.AppendUint64(b, w.received)
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

func readWelcome(r io.Reader) (welcome, error) {
	var w welcome
	head := make([]byte, welcomeFixed)
	if _, err := io.ReadFull(r, head); err != nil {
		return w, fmt.Errorf("read welcome: %w", err)
	}
	if string(head[:len(magic)]) != magic {
		return w, fmt.Errorf("the agent does not speak resumable streams (it answered %s); upgrade it", strconv.Quote(string(head[:len(magic)])))
	}
	w.status = head[len(magic)]
	w.received = binary.BigEndian.Uint64(head[len(magic)+1:])
	n := int(binary.BigEndian.Uint16(head[len(magic)+9:]))
	if n > maxMsg {
		return w, fmt.Errorf("welcome: message of %d bytes", n)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return w, fmt.Errorf("read welcome: %w", err)
	}
	w.msg = model.QuoteN(string(msg), maxMsg)
	if w.status == statusOK {
		w.msg = ""
	} else if w.status != statusRefused {
		return w, fmt.Errorf("welcome: unknown status %d", w.status)
	}
	return w, nil
}

// resumeToken binds a resume attempt to its session, the agent's identity
// and the attempt's number.
func resumeToken(secret [TokenSize]byte, id, agentID string, gen uint32) [TokenSize]byte {
	m := hmac.New(sha256.New, secret[:])
	m.Write([]byte("warren-resume\x00"))
	m.Write([]byte(id))
	m.Write([]byte{0})
	m.Write([]byte(agentID))
	m.Write([]byte{0})
	m.Write(binary.BigEndian.AppendUint32(nil, gen))
	var t [TokenSize]byte
	copy(t[:], m.Sum(nil))
	return t
}
