package nodessh

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Defaults for PATH, like a Debian login: the sbin directories only for root.
const (
	rootPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	userPath = "/usr/local/bin:/usr/bin:/bin"
)

// account is a login user as the passwd and group databases describe it.
type account struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32 // supplementary groups, including gid
	home   string
	shell  string // absolute path of the login shell
}

// lookupAccount resolves a login name through the passwd database.
func lookupAccount(name string) (*account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("look up user %q: %w", name, err)
	}
	return accountFromUser(u)
}

// currentAccount is the user this process runs as.
func currentAccount() (*account, error) {
	u, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("look up current user: %w", err)
	}
	return accountFromUser(u)
}

func accountFromUser(u *user.User) (*account, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse uid %q of user %q: %w", u.Uid, u.Username, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse gid %q of user %q: %w", u.Gid, u.Username, err)
	}
	a := &account{
		name:   u.Username,
		uid:    uint32(uid),
		gid:    uint32(gid),
		groups: []uint32{uint32(gid)},
		home:   u.HomeDir,
		shell:  loginShell(u.Username),
	}
	// A user without readable group memberships still gets a working
	// session with the primary group, as login(1) would give.
	if ids, err := u.GroupIds(); err == nil {
		a.groups = a.groups[:0]
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil {
				a.groups = append(a.groups, uint32(g))
			}
		}
	}
	return a, nil
}

// loginShell finds the user's shell. os/user does not expose it, so read
// /etc/passwd and, for users from other NSS sources (LDAP, sssd), ask
// getent. /bin/sh is the last resort, as in OpenSSH.
func loginShell(name string) string {
	if sh := shellFromPasswd(name); sh != "" {
		return sh
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "getent", "passwd", name).Output()
	if err == nil {
		if sh := shellFromEntry(strings.TrimSpace(string(out)), name); sh != "" {
			return sh
		}
	}
	return "/bin/sh"
}

func shellFromPasswd(name string) string {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if sh := shellFromEntry(sc.Text(), name); sh != "" {
			return sh
		}
	}
	return ""
}

// shellFromEntry returns the shell field of a passwd line for name, if the
// line is for name and names an absolute shell.
func shellFromEntry(line, name string) string {
	fields := strings.Split(line, ":")
	if len(fields) != 7 || fields[0] != name || !filepath.IsAbs(fields[6]) {
		return ""
	}
	return fields[6]
}

// env is the environment every session of the account starts from. The
// agent's own environment is never inherited: it may hold the agent's
// secrets and has nothing to do with the login.
func (a *account) env() []string {
	path := userPath
	if a.uid == 0 {
		path = rootPath
	}
	return []string{
		"HOME=" + a.home,
		"USER=" + a.name,
		"LOGNAME=" + a.name,
		"SHELL=" + a.shell,
		"PATH=" + path,
	}
}

// workDir is the home directory, or / when it does not exist, as sshd does.
func (a *account) workDir() string {
	if fi, err := os.Stat(a.home); err == nil && fi.IsDir() {
		return a.home
	}
	return "/"
}

// credential makes a child run as the account. Only root may switch; for
// anyone else the child keeps the agent's identity, which is the account's
// (auth refuses other logins).
func (a *account) credential(asRoot bool) *syscall.Credential {
	if !asRoot {
		return nil
	}
	return &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: a.groups}
}
