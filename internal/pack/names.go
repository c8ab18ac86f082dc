package pack

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"
)

// CleanName turns an archive entry's name into a clean relative path, or
// says why it is refused: empty, a NUL byte, absolute, a backslash, a ".."
// component. "" with a nil error means the entry is the tree's root ("./")
// and names nothing. It is the one rule for entry names: the upload store
// (unprivd/source) checks every archive and git tree with it, and Writer
// every entry it packs.
func CleanName(name string) (string, error) {
	if name == "" {
		return "", errors.New("entry with an empty name")
	}
	if strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("entry %q: name contains a NUL byte", name)
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("entry %q: absolute paths are not allowed", name)
	}
	if strings.Contains(name, `\`) {
		return "", fmt.Errorf("entry %q: backslashes are not allowed in names", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("entry %q: \"..\" components are not allowed", name)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	if !filepath.IsLocal(clean) {
		return "", fmt.Errorf("entry %q: path escapes the tree", name)
	}
	return clean, nil
}

// skipDir are directory names that are never part of an app's source:
// Python's caches, git's repository, and the resource forks macOS's
// "Compress" adds to a zip beside the folder.
var skipDir = map[string]bool{"__pycache__": true, ".git": true, "__MACOSX": true}

// Skipped reports whether the clean entry name is left out of an app's
// archive: anything under a __pycache__, .git or __MACOSX directory, and
// *.pyc files.
func Skipped(name string) bool {
	parts := strings.Split(name, "/")
	for _, d := range parts[:len(parts)-1] {
		if skipDir[d] {
			return true
		}
	}
	return strings.HasSuffix(name, ".pyc")
}

// Compare orders clean entry names as a directory walk visits them (each
// directory's entries by name, a directory's contents right after it):
// component by component, so "a/b" comes before "a-c" and "a.py". It is
// the order of every archive this package writes.
func Compare(a, b string) int {
	for {
		ai, bi := strings.IndexByte(a, '/'), strings.IndexByte(b, '/')
		ah, bh := a, b
		if ai >= 0 {
			ah = a[:ai]
		}
		if bi >= 0 {
			bh = b[:bi]
		}
		if c := strings.Compare(ah, bh); c != 0 {
			return c
		}
		switch {
		case ai < 0 && bi < 0:
			return 0
		case ai < 0:
			return -1
		case bi < 0:
			return 1
		}
		a, b = a[ai+1:], b[bi+1:]
	}
}
