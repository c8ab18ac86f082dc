package main

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/opus-hosting/opus/internal/gitsrc"
)

// sourceHelp is the rule for SRC, shown in the help of every command that
// takes one. Its git forms are made from gitsrc.Forms, the rule opusd
// applies, so the help lists exactly what the server accepts.
var sourceHelp = `SRC is where an app's code comes from:
  - a git URL, cloned by opusd (plain http is refused; the scp-like form
    has a ':' before any '/'):
      ` + gitsrc.OrList(false) + `;
    ` + gitsrc.SSHForms() + ` only where the host administrator
    gave opusd an ssh key (without one they are refused up front);
  - for admins only, a git repository on this host, cloned by opusd with
    its own rights: a local path to one (a directory holding .git, or a
    bare repository), ` + localForms() + `;
  - any other local directory: packed by opusctl with your own rights and
    uploaded, exactly as it is on disk.
Append @REF to a git source for a branch, tag or commit (default: the
remote's HEAD); an uploaded directory takes no @REF. Prefix NAME= to
choose the app's name; it defaults to the directory or repository name
(without .git) and must be a Python package name.`

// localForms lists the admin-only forms of gitsrc.Forms with a scheme (a
// local path is described in words beside them).
func localForms() string {
	var ps []string
	for _, f := range gitsrc.Forms {
		if f.Local && f.Scheme != "" {
			ps = append(ps, "or "+f.Pattern)
		}
	}
	return strings.Join(ps, ", ")
}

// appSource is a parsed SRC argument.
type appSource struct {
	name     string // the app name, explicit or derived
	git      bool   // cloned by opusd (location is a URL or a repository path)
	location string // URL, absolute repository path, or absolute directory to upload
	ref      string // git ref; empty for the remote's HEAD
}

// statFunc is os.Stat, replaceable in tests and the fuzz target.
type statFunc func(string) (fs.FileInfo, error)

// isAppName reports whether s can be an app name given with NAME=.
func isAppName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r == '_':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// isURL reports whether s is a git URL rather than a local path, by git's
// own rule, and returns the index where the URL's path part starts (refs
// are only looked for there, so user@ in a host part is not a ref).
func isURL(s string) (bool, int) {
	if i := strings.Index(s, "://"); i > 0 {
		rest := s[i+3:]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			return true, i + 3 + j
		}
		return true, len(s)
	}
	// scp-like: a colon before any slash, and not a relative path.
	colon := strings.IndexByte(s, ':')
	slash := strings.IndexByte(s, '/')
	if colon > 0 && (slash < 0 || colon < slash) && !strings.HasPrefix(s, ".") {
		return true, colon + 1
	}
	return false, 0
}

// looksLikeSource reports whether arg of `apps update` names a source
// (URL or existing path) rather than a ref. git refs cannot hold ':', so a
// colon always means a URL.
func looksLikeSource(arg string, stat statFunc) bool {
	if u, _ := isURL(arg); u {
		return true
	}
	if strings.HasPrefix(arg, "/") || strings.HasPrefix(arg, "./") || strings.HasPrefix(arg, "../") || arg == "." || arg == ".." {
		return true
	}
	if i := strings.IndexByte(arg, '='); i > 0 && isAppName(arg[:i]) {
		return true
	}
	loc, _ := splitRef(arg, 0)
	_, err := stat(loc)
	return err == nil
}

// splitRef splits "LOCATION@REF" at the last '@' at or after from.
func splitRef(s string, from int) (string, string) {
	if from > len(s) {
		from = len(s)
	}
	if i := strings.LastIndexByte(s[from:], '@'); i >= 0 {
		return s[:from+i], s[from+i+1:]
	}
	return s, ""
}

// parseSource parses "[NAME=]SRC[@REF]" (see sourceHelp).
func parseSource(arg string, stat statFunc) (appSource, error) {
	var src appSource
	rest := arg
	if i := strings.IndexByte(arg, '='); i > 0 && isAppName(arg[:i]) {
		src.name, rest = arg[:i], arg[i+1:]
	}
	if rest == "" {
		return src, fmt.Errorf("app source %q is empty", arg)
	}
	if u, pathStart := isURL(rest); u {
		src.git = true
		src.location, src.ref = splitRef(rest, pathStart)
		if src.name == "" {
			if src.name = gitsrc.DefaultAppName(src.location); src.name == "" {
				return src, fmt.Errorf("cannot tell an app name from %q; write NAME=%s", rest, rest)
			}
		}
		return src, finishSource(src, arg)
	}
	// A local path. One that exists as written is taken whole, so a
	// directory whose name holds '@' still works.
	loc := rest
	if _, err := stat(rest); err != nil {
		loc, src.ref = splitRef(rest, 0)
	}
	fi, err := stat(loc)
	if err != nil {
		return src, fmt.Errorf("app source %s: %w", loc, unwrapPathErr(err))
	}
	if !fi.IsDir() {
		return src, fmt.Errorf("app source %s is not a directory", loc)
	}
	abs, err := filepath.Abs(loc)
	if err != nil {
		return src, fmt.Errorf("app source %s: %w", loc, err)
	}
	src.location = abs
	src.git = isGitRepo(abs, stat)
	if src.name == "" {
		if src.name = gitsrc.DefaultAppName(abs); src.name == "" {
			return src, fmt.Errorf("cannot tell an app name from %q; write NAME=%s", rest, rest)
		}
	}
	if !src.git && src.ref != "" {
		return src, fmt.Errorf("%s is a plain directory (not a git repository), so it is uploaded as it is; @%s applies only to git sources", loc, src.ref)
	}
	return src, finishSource(src, arg)
}

// finishSource checks what every kind of source needs.
func finishSource(src appSource, arg string) error {
	if src.location == "" {
		return fmt.Errorf("app source %q has no location", arg)
	}
	if strings.HasSuffix(arg, "@") {
		return fmt.Errorf("app source %q has an empty @REF", arg)
	}
	return nil
}

// isGitRepo reports whether dir is a git work tree (holds .git, a
// directory or a gitdir file) or a bare repository.
func isGitRepo(dir string, stat statFunc) bool {
	if _, err := stat(filepath.Join(dir, ".git")); err == nil {
		return true
	}
	head, err1 := stat(filepath.Join(dir, "HEAD"))
	objects, err2 := stat(filepath.Join(dir, "objects"))
	refs, err3 := stat(filepath.Join(dir, "refs"))
	return err1 == nil && err2 == nil && err3 == nil && head.Mode().IsRegular() && objects.IsDir() && refs.IsDir()
}

// unwrapPathErr drops fs.PathError's repetition of the path the caller's
// message already names.
func unwrapPathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
