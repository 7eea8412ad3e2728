package pki

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// writeFileAtomic writes data to path through a temporary file in the same
// directory that has mode perm before any byte is written, then renames it
// into place and syncs the directory: a reader sees the old file or the new
// one, never a partial one, and a secret is never readable by others.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				_ = f.Close()
			}
			_ = os.Remove(tmp)
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	// Fchmod is not subject to the umask, so perm is exact.
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	closed = true
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	return nil
}

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
