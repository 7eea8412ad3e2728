package nodessh

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// bigFileSize is large enough that a transfer spans many channel windows
// and SFTP packets, so flow control and EOF handling are exercised.
const bigFileSize = 64 << 20

// TestOpenSSHSession drives the stock ssh client through exec, exit
// codes, stdio, PTYs and environment.
func TestOpenSSHSession(t *testing.T) {
	h := newHarness(t)

	t.Run("exec", func(t *testing.T) {
		if got := h.mustSSH("echo hi"); got != "hi\n" {
			t.Errorf("stdout = %q, want %q", got, "hi\n")
		}
	})

	t.Run("exit status", func(t *testing.T) {
		res := h.ssh(nil, nil, "exit 7")
		if res.code != 7 {
			t.Errorf("exit code = %d, want 7 (stderr %q)", res.code, res.stderr)
		}
	})

	t.Run("stderr is separate", func(t *testing.T) {
		res := h.ssh(nil, nil, "echo out; echo err >&2")
		if res.stdout != "out\n" || res.stderr != "err\n" || res.code != 0 {
			t.Errorf("got stdout %q stderr %q code %d, want %q %q 0", res.stdout, res.stderr, res.code, "out\n", "err\n")
		}
	})

	t.Run("stdin EOF reaches the command", func(t *testing.T) {
		res := h.ssh(strings.NewReader("ping\n"), nil, "cat; echo done")
		if res.stdout != "ping\ndone\n" {
			t.Errorf("stdout = %q, want %q", res.stdout, "ping\ndone\n")
		}
	})

	t.Run("no tty without -t", func(t *testing.T) {
		res := h.ssh(nil, nil, "tty")
		if res.code == 0 || !strings.Contains(res.stdout, "not a tty") {
			t.Errorf("tty: stdout %q code %d, want 'not a tty' and a failure", res.stdout, res.code)
		}
	})

	t.Run("pty shell", func(t *testing.T) {
		// The client's TERM (vt100, see harness.run) travels in pty-req.
		res := h.ssh(strings.NewReader("echo TERM=$TERM; tty; exit 3\n"), []string{"-tt"})
		if res.code != 3 {
			t.Errorf("exit code = %d, want 3 (stdout %q, stderr %q)", res.code, res.stdout, res.stderr)
		}
		if !strings.Contains(res.stdout, "TERM=vt100") || !strings.Contains(res.stdout, "/dev/pts/") {
			t.Errorf("stdout = %q, want TERM=vt100 and a /dev/pts/ tty", res.stdout)
		}
	})

	t.Run("shell without pty", func(t *testing.T) {
		// No command: a "shell" request, fed by stdin.
		res := h.ssh(strings.NewReader("echo via-shell; exit 5\n"), []string{"-T"})
		if res.code != 5 || res.stdout != "via-shell\n" {
			t.Errorf("got stdout %q code %d, want %q 5 (stderr %q)", res.stdout, res.code, "via-shell\n", res.stderr)
		}
	})

	t.Run("pty exec", func(t *testing.T) {
		res := h.ssh(nil, []string{"-tt"}, "stty size; echo err >&2")
		// Under a PTY stderr joins stdout, with CRLF line ends.
		if res.code != 0 || !strings.Contains(res.stdout, "err\r\n") || res.stderr != "" {
			t.Errorf("got stdout %q stderr %q code %d, want err on stdout", res.stdout, res.stderr, res.code)
		}
	})

	t.Run("env", func(t *testing.T) {
		res := h.ssh(nil, []string{"-o", "SetEnv=FOO=bar LD_PRELOAD=/nonexistent.so"},
			`echo "$FOO ${LD_PRELOAD-unset}"`)
		if res.stdout != "bar unset\n" {
			t.Errorf("stdout = %q, want %q", res.stdout, "bar unset\n")
		}
	})

	t.Run("login environment", func(t *testing.T) {
		acct, err := lookupAccount(h.login)
		if err != nil {
			t.Fatal(err)
		}
		got := h.mustSSH(`echo "$USER $LOGNAME $HOME $SHELL"; pwd`)
		want := fmt.Sprintf("%s %s %s %s\n%s\n", acct.name, acct.name, acct.home, acct.shell, acct.workDir())
		if got != want {
			t.Errorf("stdout = %q, want %q", got, want)
		}
	})

	t.Run("large stdin and stdout", func(t *testing.T) {
		src := filepath.Join(h.dir, "stdin.bin")
		want := randomFile(t, src, 16<<20)
		in, err := os.Open(src)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		dst := filepath.Join(h.dir, "stdin.out")
		if res := h.ssh(in, nil, "cat > "+dst); res.code != 0 {
			t.Fatalf("upload: exit %d: %s", res.code, res.stderr)
		}
		if got := fileSHA256(t, dst); got != want {
			t.Errorf("uploaded sha256 = %s, want %s", got, want)
		}
		res := h.ssh(nil, nil, "cat "+dst)
		if got := sha256Hex([]byte(res.stdout)); res.code != 0 || got != want {
			t.Errorf("download: exit %d, sha256 %s, want 0 and %s", res.code, got, want)
		}
	})
}

// TestOpenSSHFileTransfer copies files with scp (both protocols), sftp,
// rsync and git.
func TestOpenSSHFileTransfer(t *testing.T) {
	h := newHarness(t)
	src := filepath.Join(h.dir, "big.bin")
	want := randomFile(t, src, bigFileSize)
	remote := h.login + "@127.0.0.1:"

	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"scp sftp protocol", nil},
		{"scp legacy protocol", []string{"-O"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireBinaries(t, "scp")
			up := filepath.Join(h.dir, strings.ReplaceAll(tc.name, " ", "_")+".up")
			down := up + ".down"
			args := append(append(h.clientOpts(h.key), "-P", h.port), tc.extra...)
			if res := h.run(nil, "scp", append(args, src, remote+up)...); res.code != 0 {
				t.Fatalf("scp upload: exit %d: %s", res.code, res.stderr)
			}
			if got := fileSHA256(t, up); got != want {
				t.Fatalf("uploaded sha256 = %s, want %s", got, want)
			}
			if res := h.run(nil, "scp", append(args, remote+up, down)...); res.code != 0 {
				t.Fatalf("scp download: exit %d: %s", res.code, res.stderr)
			}
			if got := fileSHA256(t, down); got != want {
				t.Errorf("downloaded sha256 = %s, want %s", got, want)
			}
		})
	}

	t.Run("sftp batch", func(t *testing.T) {
		requireBinaries(t, "sftp")
		testSFTPBatch(t, h)
	})

	t.Run("rsync", func(t *testing.T) {
		requireBinaries(t, "rsync")
		sshCmd := "ssh " + strings.Join(append(h.clientOpts(h.key), "-p", h.port), " ")
		up := filepath.Join(h.dir, "rsync.up")
		if res := h.run(nil, "rsync", "-e", sshCmd, src, remote+up); res.code != 0 {
			t.Fatalf("rsync upload: exit %d: %s", res.code, res.stderr)
		}
		if got := fileSHA256(t, up); got != want {
			t.Errorf("uploaded sha256 = %s, want %s", got, want)
		}
		down := filepath.Join(h.dir, "rsync.down")
		if res := h.run(nil, "rsync", "-e", sshCmd, remote+up, down); res.code != 0 {
			t.Fatalf("rsync download: exit %d: %s", res.code, res.stderr)
		}
		if got := fileSHA256(t, down); got != want {
			t.Errorf("downloaded sha256 = %s, want %s", got, want)
		}
	})

	t.Run("git", func(t *testing.T) {
		requireBinaries(t, "git")
		testGit(t, h)
	})
}

// testSFTPBatch puts and gets a file with `sftp -b`, in a fresh remote
// directory, and checks both copies.
func testSFTPBatch(t *testing.T, h *harness) {
	t.Helper()
	src := filepath.Join(h.dir, "sftp.src")
	want := randomFile(t, src, 3<<20+123)
	remoteDir := filepath.Join(h.dir, "sftp-remote")
	got := filepath.Join(h.dir, "sftp.got")
	batch := filepath.Join(h.dir, "sftp.batch")
	script := fmt.Sprintf("mkdir %s\ncd %s\nput %s copy.bin\nls -l\nget copy.bin %s\n", remoteDir, remoteDir, src, got)
	if err := os.WriteFile(batch, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append(h.clientOpts(h.key), "-P", h.port, "-b", batch, h.login+"@127.0.0.1")
	res := h.run(nil, "sftp", args...)
	if res.code != 0 {
		t.Fatalf("sftp: exit %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stdout, "copy.bin") {
		t.Errorf("ls output %q does not list copy.bin", res.stdout)
	}
	if s := fileSHA256(t, filepath.Join(remoteDir, "copy.bin")); s != want {
		t.Errorf("put sha256 = %s, want %s", s, want)
	}
	if s := fileSHA256(t, got); s != want {
		t.Errorf("get sha256 = %s, want %s", s, want)
	}
}

// testGit clones a bare repository over SSH, commits, pushes, and checks
// the push arrived.
func testGit(t *testing.T, h *harness) {
	t.Helper()
	gitEnv := func(cmd *exec.Cmd) {
		cmd.Env = []string{
			"HOME=" + h.home, "PATH=" + os.Getenv("PATH"),
			"GIT_SSH_COMMAND=ssh " + strings.Join(h.clientOpts(h.key), " "),
			"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.test",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.test",
			"GIT_CONFIG_NOSYSTEM=1",
		}
	}
	git := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		gitEnv(cmd)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	bare := filepath.Join(h.dir, "repo.git")
	git(h.dir, "init", "--bare", "-b", "main", bare)
	url := fmt.Sprintf("ssh://%s@127.0.0.1:%s%s", h.login, h.port, bare)
	work := filepath.Join(h.dir, "work")
	git(h.dir, "clone", url, work)
	if err := os.WriteFile(filepath.Join(work, "README"), []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	git(work, "add", "README")
	git(work, "commit", "-m", "first")
	git(work, "push", "origin", "HEAD:main")
	if got := git(bare, "log", "--format=%s", "main"); got != "first\n" {
		t.Errorf("remote log = %q, want %q", got, "first\n")
	}
	clone2 := filepath.Join(h.dir, "work2")
	git(h.dir, "clone", url, clone2)
	if b, err := os.ReadFile(filepath.Join(clone2, "README")); err != nil || string(b) != "hello\n" {
		t.Errorf("cloned README = %q, %v; want %q", b, err, "hello\n")
	}
}

// TestSFTPCommand serves the subsystem with an external command (this test
// binary running ServeSFTP, as `warren sftp-server` would) instead of
// in-process.
func TestSFTPCommand(t *testing.T) {
	requireBinaries(t, "sftp")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, withConfig(func(c *Config) { c.SFTPCommand = []string{exe, sftpServerArg} }))
	testSFTPBatch(t, h)
}
