// Package atomicfile replaces a file whole or not at all: the one way the
// daemons write a file a reader must never see half-written (a vhost, a
// key, a certificate, a rendered settings file). The data goes to a
// temporary file in the same directory, whose mode is set before any byte
// is written (a key is never readable by others, even briefly), is synced,
// and is renamed over the path. Paths are opened by name: only for
// directories the daemon's own user alone may write (a directory a tenant
// writes is package tenantdir's).
package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with data, mode mode.
func Write(path string, data []byte, mode fs.FileMode) error {
	return WriteFrom(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFrom replaces path with what fill writes, mode mode: for content
// too large to hold in memory (a database snapshot). When fill fails,
// path is left as it was and the error is fill's.
func WriteFrom(path string, mode fs.FileMode, fill func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := fill(f); err != nil {
		return err
	}
	for _, step := range []func() error{
		f.Sync,
		f.Close,
		func() error { return os.Rename(tmp, path) },
	} {
		if err := step(); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	ok = true
	return nil
}

// WriteIfChanged is Write unless path already holds exactly data with
// mode mode; it reports whether it wrote.
func WriteIfChanged(path string, data []byte, mode fs.FileMode) (bool, error) {
	old, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(old, data):
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == mode {
			return false, nil
		}
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return true, Write(path, data, mode)
}
