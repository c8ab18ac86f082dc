// Package source gets a Django app's code onto the host for opusd: it checks
// app names and app trees, stores uploaded archives by digest and unpacks
// them safely, and fetches git sources with go-git into plain trees. Every
// tree, from an archive or from git, is written by the same writer, which
// refuses links, device files, escaping names and oversized content.
package source

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/opus-hosting/opus/internal/names"
)

// ValidateApp checks that dir holds an app called name the way `manage.py
// startapp` lays one out: __init__.py at the top level, only regular files
// and directories, no symbolic links.
func ValidateApp(dir, name string) error {
	if err := names.ValidateAppName(name); err != nil {
		return err
	}
	var bad error
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch t := d.Type(); {
		case t&fs.ModeSymlink != 0:
			bad = fmt.Errorf("app %s: %s is a symbolic link; links are not allowed in app sources", name, rel)
		case t.IsDir(), t.IsRegular():
			return nil
		default:
			bad = fmt.Errorf("app %s: %s is not a regular file or directory", name, rel)
		}
		return filepath.SkipAll
	})
	if err != nil {
		return fmt.Errorf("app %s: %w", name, err)
	}
	if bad != nil {
		return bad
	}
	if fi, err := os.Lstat(filepath.Join(dir, "__init__.py")); err == nil && fi.Mode().IsRegular() {
		return nil
	}
	// The common mistake: the archive or repository holds the package as a
	// single directory (blog/__init__.py) instead of being the package.
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("app %s: %w", name, err)
	}
	var pkgs []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if fi, err := os.Lstat(filepath.Join(dir, e.Name(), "__init__.py")); err == nil && fi.Mode().IsRegular() {
			pkgs = append(pkgs, e.Name()+"/")
		}
	}
	sort.Strings(pkgs)
	if len(pkgs) > 0 {
		return fmt.Errorf("app %s: the app's files must be at the top level; found a directory %s containing __init__.py (pack or push the contents of that directory instead)", name, strings.Join(pkgs, ", "))
	}
	return errors.New("app " + name + ": no __init__.py at the top level; an app must look like `manage.py startapp` output (a package directory with __init__.py, models.py, ...)")
}

// HasURLs reports whether the app in dir has a urls.py to mount at /<app>/.
func HasURLs(dir string) bool {
	fi, err := os.Lstat(filepath.Join(dir, "urls.py"))
	return err == nil && fi.Mode().IsRegular()
}
