package usersh

import (
	"context"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// serveSession runs one "session" channel: an exec of a proxy command, or
// a shell that prints help.
func (s *Server) serveSession(ctx context.Context, c *Conn, nch ssh.NewChannel) {
	ch, reqs, err := nch.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	for req := range reqs {
		switch req.Type {
		case "pty-req", "env", "window-change":
			_ = req.Reply(true, nil)
		case "exec":
			var p struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				_ = req.Reply(false, nil)
				continue
			}
			_ = req.Reply(true, nil)
			status := s.cfg.Handler.Command(ctx, c, strings.Fields(p.Command), ch, ch, ch.Stderr())
			exit(ch, status)
			return
		case "shell":
			_ = req.Reply(true, nil)
			help := s.cfg.Help
			if help == "" {
				help = "This is a Warren proxy. Use it as a jump host: ssh -J <user>@<proxy> <resource>\n"
			}
			fmt.Fprint(ch, strings.ReplaceAll(help, "\n", "\r\n"))
			exit(ch, 0)
			return
		default:
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
}

func exit(ch ssh.Channel, status int) {
	_ = ch.CloseWrite()
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
}
