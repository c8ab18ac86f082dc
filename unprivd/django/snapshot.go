package django

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opus-hosting/opus/internal/atomicfile"
	"github.com/opus-hosting/opus/internal/layout"
)

// RenderedFiles are the paths, relative to the code directory, of every
// file Render writes, opus.json last.
func RenderedFiles() []string {
	m, _ := files(Config{})
	return sortedKeys(m)
}

// Snapshot returns the current content of every rendered file in codeDir;
// a file that does not exist maps to nil. Restore puts it back.
func Snapshot(codeDir string) (map[string][]byte, error) {
	snap := map[string][]byte{}
	for _, name := range RenderedFiles() {
		data, err := os.ReadFile(filepath.Join(codeDir, name))
		switch {
		case err == nil:
			snap[name] = data
		case errors.Is(err, fs.ErrNotExist):
			snap[name] = nil
		default:
			return nil, fmt.Errorf("snapshot rendered files: %w", err)
		}
	}
	return snap, nil
}

// Restore writes a Snapshot back into codeDir: files that did not exist
// are removed, the others get their old content (atomically, and only if
// it differs). It reports whether anything changed.
func Restore(codeDir string, snap map[string][]byte) (changed bool, err error) {
	names := make(map[string][]byte, len(snap))
	for k, v := range snap {
		names[k] = v
	}
	for _, name := range sortedKeys(names) {
		p := filepath.Join(codeDir, name)
		if snap[name] == nil {
			err := os.Remove(p)
			if err == nil {
				changed = true
			} else if !errors.Is(err, fs.ErrNotExist) {
				return changed, fmt.Errorf("restore %s: %w", name, err)
			}
			continue
		}
		c, err := atomicfile.WriteIfChanged(p, snap[name], fileMode)
		if err != nil {
			return changed, fmt.Errorf("restore %s: %w", name, err)
		}
		changed = changed || c
	}
	return changed, nil
}

// InstalledApps returns the apps the rendered opus.json in codeDir lists
// in INSTALLED_APPS, or nil when nothing is rendered yet.
func InstalledApps(codeDir string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(codeDir, layout.PackageName, "opus.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read opus.json: %w", err)
	}
	var j opusJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("read opus.json: %w", err)
	}
	return j.InstalledApps, nil
}
