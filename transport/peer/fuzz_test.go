package peer

import (
	"testing"

	"google.golang.org/grpc/status"
)

// FuzzParseHello: any first frame a peer sends is either a token of 1 to
// maxTokenLen bytes that is exactly the frame's tail, or a status error.
func FuzzParseHello(f *testing.F) {
	f.Add([]byte("H\x01session-token"))
	f.Add([]byte("H\x02x"))
	f.Add([]byte("H\x01"))
	f.Add([]byte("D\x01abc"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		token, err := parseHello(b)
		if err != nil {
			if _, ok := status.FromError(err); !ok {
				t.Fatalf("parseHello(%q): error %v is not a gRPC status", b, err)
			}
			return
		}
		if len(token) == 0 || len(token) > maxTokenLen || len(b) < 2 || b[0] != frameHello || b[1] != Version || string(b[2:]) != token {
			t.Fatalf("parseHello(%q) = %q: accepted a bad hello", b, token)
		}
	})
}
