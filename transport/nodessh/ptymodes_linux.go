package nodessh

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

// Terminal mode opcodes of RFC 4254 section 8 that Linux supports, mapped
// to the termios field they set: a control character, or a flag bit.
var (
	ptyControlChars = map[byte]int{
		1: syscall.VINTR, 2: syscall.VQUIT, 3: syscall.VERASE, 4: syscall.VKILL,
		5: syscall.VEOF, 6: syscall.VEOL, 7: syscall.VEOL2, 8: syscall.VSTART,
		9: syscall.VSTOP, 10: syscall.VSUSP, 12: syscall.VREPRINT,
		13: syscall.VWERASE, 14: syscall.VLNEXT, 18: syscall.VDISCARD,
	}
	ptyFlags = map[byte]struct {
		field func(*syscall.Termios) *uint32
		bit   uint32
	}{
		30: {iflag, syscall.IGNPAR}, 31: {iflag, syscall.PARMRK}, 32: {iflag, syscall.INPCK},
		33: {iflag, syscall.ISTRIP}, 34: {iflag, syscall.INLCR}, 35: {iflag, syscall.IGNCR},
		36: {iflag, syscall.ICRNL}, 37: {iflag, syscall.IUCLC}, 38: {iflag, syscall.IXON},
		39: {iflag, syscall.IXANY}, 40: {iflag, syscall.IXOFF}, 41: {iflag, syscall.IMAXBEL},
		42: {iflag, syscall.IUTF8},
		50: {lflag, syscall.ISIG}, 51: {lflag, syscall.ICANON}, 52: {lflag, syscall.XCASE},
		53: {lflag, syscall.ECHO}, 54: {lflag, syscall.ECHOE}, 55: {lflag, syscall.ECHOK},
		56: {lflag, syscall.ECHONL}, 57: {lflag, syscall.NOFLSH}, 58: {lflag, syscall.TOSTOP},
		59: {lflag, syscall.IEXTEN}, 60: {lflag, syscall.ECHOCTL}, 61: {lflag, syscall.ECHOKE},
		62: {lflag, syscall.PENDIN},
		70: {oflag, syscall.OPOST}, 71: {oflag, syscall.OLCUC}, 72: {oflag, syscall.ONLCR},
		73: {oflag, syscall.OCRNL}, 74: {oflag, syscall.ONOCR}, 75: {oflag, syscall.ONLRET},
		90: {cflag, syscall.CS7}, 91: {cflag, syscall.CS8}, 92: {cflag, syscall.PARENB},
		93: {cflag, syscall.PARODD},
	}
)

func iflag(t *syscall.Termios) *uint32 { return &t.Iflag }
func lflag(t *syscall.Termios) *uint32 { return &t.Lflag }
func oflag(t *syscall.Termios) *uint32 { return &t.Oflag }
func cflag(t *syscall.Termios) *uint32 { return &t.Cflag }

// applyModes sets the terminal modes a pty-req carried on tty, as sshd
// does, so that the remote line discipline matches the user's terminal
// (erase character, UTF-8 line editing, ...). Opcodes Linux lacks and the
// speeds (meaningless on a PTY) are skipped; parsing stops at TTY_OP_END
// or at an opcode whose argument size is unknown (160 and up), as the RFC
// requires.
func applyModes(tty *os.File, modes []byte) error {
	if len(modes) == 0 {
		return nil
	}
	rc, err := tty.SyscallConn()
	if err != nil {
		return fmt.Errorf("set terminal modes: %w", err)
	}
	var errno syscall.Errno
	ioctl := func(req uintptr, t *syscall.Termios) error {
		if err := rc.Control(func(fd uintptr) {
			_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(t)))
		}); err != nil {
			return err
		}
		if errno != 0 {
			return errno
		}
		return nil
	}
	var t syscall.Termios
	if err := ioctl(syscall.TCGETS, &t); err != nil {
		return fmt.Errorf("get terminal modes: %w", err)
	}
	for len(modes) >= 5 {
		op := modes[0]
		if op == 0 || op >= 160 {
			break
		}
		arg := binary.BigEndian.Uint32(modes[1:5])
		modes = modes[5:]
		if cc, ok := ptyControlChars[op]; ok {
			t.Cc[cc] = uint8(arg)
			continue
		}
		if f, ok := ptyFlags[op]; ok {
			if arg != 0 {
				*f.field(&t) |= f.bit
			} else {
				*f.field(&t) &^= f.bit
			}
		}
	}
	if err := ioctl(syscall.TCSETS, &t); err != nil {
		return fmt.Errorf("set terminal modes: %w", err)
	}
	return nil
}
