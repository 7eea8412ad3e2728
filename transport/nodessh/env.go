package nodessh

import (
	"strings"
)

// Limits on what "env" requests may add, so a client cannot grow a
// session's memory or a child's environment without bound. sshd stops
// at 128 variables and has no size limit but its packet size (256 KiB);
// here one variable is at most what Linux's execve takes in one
// environment string (MAX_ARG_STRLEN, 128 KiB with the NUL), and all of
// them twice that, well below execve's total (a quarter of the stack
// limit, usually 2 MiB). Variables over the limits are refused, logged,
// and named on the session's stderr when its job starts: OpenSSH's
// SendEnv and SetEnv want no reply, so the user would not know otherwise.
const (
	maxEnvVars     = 128
	maxEnvVarBytes = 128<<10 - 1
	maxEnvBytes    = 256 << 10
)

// deniedEnvPrefixes and deniedEnvNames are variables a client may not set.
// Most make the dynamic loader, a shell or an interpreter load code of the
// client's choosing, which matters when a certificate's force-command is
// meant to restrict what runs; the rest would override the identity and
// paths the server sets for the login.
var (
	deniedEnvPrefixes = []string{"LD_", "DYLD_", "BASH_FUNC_", "SSH_", "GIT_CONFIG"}
	deniedEnvNames    = map[string]bool{
		"BASH_ENV": true, "ENV": true, "SHELLOPTS": true, "BASHOPTS": true,
		"PS4": true, "PROMPT_COMMAND": true, "IFS": true, "CDPATH": true,
		"GLOBIGNORE": true,
		"HOME":       true, "USER": true, "LOGNAME": true, "SHELL": true,
		"PATH": true, "MAIL": true,
		"GCONV_PATH": true, "LOCPATH": true, "NLSPATH": true,
		"HOSTALIASES": true, "LOCALDOMAIN": true, "RES_OPTIONS": true,
		"PERL5LIB": true, "PERL5OPT": true, "PERLLIB": true,
		"PYTHONPATH": true, "PYTHONSTARTUP": true, "PYTHONHOME": true,
		"RUBYLIB": true, "RUBYOPT": true,
		"NODE_OPTIONS": true, "NODE_PATH": true,
		"JAVA_TOOL_OPTIONS": true, "_JAVA_OPTIONS": true,
		"GIT_EXEC_PATH": true, "GIT_SSH": true, "GIT_SSH_COMMAND": true,
	}
)

// envProblem says why a client may not set name=value, or "" if it may.
// Names are restricted to the portable shell identifier set, which also
// keeps out '=' and NUL.
func envProblem(name, value string) string {
	if name == "" {
		return "empty name"
	}
	if len(name) > 255 {
		return "name too long"
	}
	for i := 0; i < len(name); i++ {
		ch := name[i]
		ok := ch == '_' || ch >= 'A' && ch <= 'Z' || ch >= 'a' && ch <= 'z' || i > 0 && ch >= '0' && ch <= '9'
		if !ok {
			return "name must be letters, digits and underscores, not starting with a digit"
		}
	}
	if strings.IndexByte(value, 0) >= 0 {
		return "value contains a NUL byte"
	}
	if deniedEnvNames[name] {
		return "variable is reserved"
	}
	for _, p := range deniedEnvPrefixes {
		if strings.HasPrefix(name, p) {
			return "variable is reserved"
		}
	}
	return ""
}
