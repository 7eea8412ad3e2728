package pki

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// maxIdentityFile bounds what is read from an identity file; the largest real
// one is a few kilobytes, a token file with thousands of tokens well below.
const maxIdentityFile = 4 << 20

// readSecret reads a private file of the identity in dir, refusing it if
// group or others may access it (the check is made on the opened file).
func readSecret(dir, file string) ([]byte, error) {
	return readIdentityFile(dir, file, true)
}

// readFile reads a public file of the identity in dir.
func readFile(dir, file string) ([]byte, error) {
	return readIdentityFile(dir, file, false)
}

func readIdentityFile(dir, file string, secret bool) ([]byte, error) {
	path := filepath.Join(dir, file)
	f, err := os.Open(path)
	if err != nil {
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) && errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s is missing (%w): point to the directory `warren init` wrote (every proxy of a cluster needs a copy of the same one; a new `warren init` would make another cluster)", path, pe.Err)
		}
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); secret && perm&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o; run chmod 600 %s so that only its owner can read it", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxIdentityFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxIdentityFile {
		return nil, fmt.Errorf("%s is larger than %d bytes; it is not a file of a cluster identity", path, maxIdentityFile)
	}
	return data, nil
}
