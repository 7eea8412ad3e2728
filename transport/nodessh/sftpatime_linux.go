package nodessh

import (
	"io/fs"
	"syscall"
	"time"
)

// fileAtime is the access time of fi, which ATTRS carries and sftp's
// get -p keeps.
func fileAtime(fi fs.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Atim.Unix())
	}
	return fi.ModTime()
}
