package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/client"
)

// projectsOnDisk lists the project trees under the base directory.
func (h *host) projectsOnDisk(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(h.cfg.BaseDir, "projects"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestHostileNames: names that are no valid project name are refused by the
// CLI with the rule they break, and nothing appears on the host.
func TestHostileNames(t *testing.T) {
	h := needHost(t)
	taken := h.newProject(t)
	h.mustCtl(t, 0, "create", taken)
	tests := []struct{ name, want string }{
		{"Blog", "lowercase"},
		{"my-blog", "contains '-'"},
		{"2blog", "starts with a digit"},
		{"class", "Python keyword"},
		{"django", "reserved"},
		{"os", "reserved"},
		{"site", "reserved"},
		{"test", "reserved"},
		{strings.Repeat("a", 40), "at most"},
		{"blög", "only lowercase"},
		{"a\nb", "contains '\\n'"},
		{"../x", "contains '.'"},
		{"", "empty"},
		{taken, "exists"},
	}
	before, trees := hostState(t), h.projectsOnDisk(t)
	for _, tt := range tests {
		r := h.ctl(t, 0, "", "create", tt.name)
		if r.code == 0 || !strings.Contains(r.err, tt.want) {
			t.Errorf("create %q: exit %d, stderr %q; want a refusal containing %q", tt.name, r.code, r.err, tt.want)
		}
	}
	if hostState(t) != before || len(h.projectsOnDisk(t)) != len(trees) {
		t.Errorf("the host changed after refused names")
	}
}

// tarball builds a gzipped tar from headers (with bodies for regular files).
type entry struct {
	hdr  tar.Header
	body string
}

func tarball(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	gz.Close()
	return buf.Bytes()
}

// bomb is a small gzip that unpacks to more than opusd's unpacked cap.
func bomb(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	zeros := make([]byte, 1<<20)
	for i := 0; i < 6; i++ {
		hdr := tar.Header{Name: "big" + string(rune('a'+i)), Typeflag: tar.TypeReg, Mode: 0o644, Size: 60 << 20}
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < 60; n++ {
			tw.Write(zeros)
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// TestHostileArchives: archives that would write outside the app, link
// anywhere, create devices or exhaust the disk are refused at upload with
// InvalidArgument, and nothing is stored.
func TestHostileArchives(t *testing.T) {
	h := needHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, h.cfg.OpusdSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reg := func(name, body string) entry {
		return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg}, body: body}
	}
	init := reg("__init__.py", "")
	tests := []struct {
		name, want string
		data       []byte
	}{
		{"dot-dot entry", "..", tarball(t, init, reg("../evil.py", "x"))},
		{"absolute path", "absolute", tarball(t, init, reg("/etc/evil.py", "x"))},
		{"symlink to /etc/shadow", "link", tarball(t, init, entry{hdr: tar.Header{Name: "shadow", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}})},
		{"hard link", "link", tarball(t, init, reg("a.py", "x"), entry{hdr: tar.Header{Name: "b.py", Typeflag: tar.TypeLink, Linkname: "a.py"}})},
		{"device node", "device", tarball(t, init, entry{hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}})},
		{"file where a directory is expected", "", tarball(t, init, reg("views", "x"), reg("views/a.py", "y"))},
		{"decompression bomb", "exceeds", bomb(t)},
	}
	sources := filepath.Join(h.cfg.BaseDir, "sources")
	countFiles := func() int {
		n := 0
		filepath.Walk(sources, func(_ string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				n++
			}
			return nil
		})
		return n
	}
	before := countFiles()
	for _, tt := range tests {
		_, err := c.UploadArchive(ctx, tt.name, bytes.NewReader(tt.data), int64(len(tt.data)))
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.want) {
			t.Errorf("upload %s: %v %q; want InvalidArgument mentioning %q", tt.name, st.Code(), st.Message(), tt.want)
		}
	}
	if n := countFiles(); n != before {
		t.Errorf("source store holds %d files after refused uploads, had %d", n, before)
	}
}

// TestHostileSources: transports other than git's own are refused at once;
// a repository with a link leaving the tree, an app that is not a package
// and an unreachable host fail the operation with a clear message, in
// bounded time, and nothing outside the project is touched.
func TestHostileSources(t *testing.T) {
	h := needHost(t)
	for _, tt := range []struct{ src, want string }{
		{"ext::sh -c touch% /tmp/opus-e2e-pwned", "transport"},
		{"fd::17", "transport"},
	} {
		name := h.newProject(t)
		r := h.ctl(t, 0, "", "create", name, "--app", "evil="+tt.src)
		if r.code == 0 || !strings.Contains(strings.ToLower(r.err), tt.want) {
			t.Errorf("create with %q: exit %d %q, want a refusal mentioning %q", tt.src, r.code, r.err, tt.want)
		}
		if exists("/tmp/opus-e2e-pwned") || passwdLine(t, "opus-"+name) != "" {
			t.Errorf("a refused source changed the host")
		}
	}

	link := newGitApp(t, "linky", "never")
	if err := os.Symlink("/etc/shadow", filepath.Join(link.dir, "shadow")); err != nil {
		t.Fatal(err)
	}
	link.git(t, "add", "-A")
	link.git(t, "commit", "-q", "-m", "link")
	nopkg := newGitApp(t, "nopkg", "never")
	nopkg.git(t, "rm", "-q", "__init__.py")
	nopkg.git(t, "commit", "-q", "-m", "not a package")
	for _, tt := range []struct{ src, want string }{
		{link.dir + "@main", "symbolic link"},
		{nopkg.dir + "@main", "__init__.py"},
		{"shop=https://127.0.0.1:1/shop.git@main", "127.0.0.1:1"},
	} {
		name := h.newProject(t)
		shadow := stateOf(t, "/etc/shadow")
		start := time.Now()
		r := h.ctl(t, 0, "", "create", name, "--app", tt.src)
		if r.code == 0 || !strings.Contains(r.err+r.out, tt.want) {
			t.Errorf("create with %s: exit %d, want a failure mentioning %q:\n%s%s", tt.src, r.code, tt.want, r.out, r.err)
		}
		if d := time.Since(start); d > 3*time.Minute {
			t.Errorf("create with %s took %v", tt.src, d)
		}
		// useradd rewrites /etc/shadow's content; owner and mode must stay.
		if got := stateOf(t, "/etc/shadow"); got.uid != shadow.uid || got.gid != shadow.gid || got.mode != shadow.mode {
			t.Errorf("/etc/shadow changed: %+v, was %+v", got, shadow)
		}
		h.mustCtl(t, 0, "destroy", name, "--yes")
	}
}

// TestHostileApps: app names that are no Python package name, clash with
// another app or with the project's own package are refused before anything
// happens.
func TestHostileApps(t *testing.T) {
	h := needHost(t)
	hello := localApp(t, "hello")
	before := hostState(t)
	for _, tt := range []struct {
		apps []string
		want string
	}{
		{[]string{"my-app=" + hello}, "my-app"},
		{[]string{"class=" + hello}, "keyword"},
		{[]string{"opus_project=" + hello}, "opus_project"},
		{[]string{"hello=" + hello, "hello=" + hello}, "hello"},
	} {
		name := h.newProject(t)
		args := []string{"create", name}
		for _, a := range tt.apps {
			args = append(args, "--app", a)
		}
		r := h.ctl(t, 0, "", args...)
		if r.code == 0 || !strings.Contains(r.err, tt.want) {
			t.Errorf("create %v: exit %d %q, want a refusal mentioning %q", tt.apps, r.code, r.err, tt.want)
		}
		if passwdLine(t, "opus-"+name) != "" {
			t.Errorf("refused create %v made a user", tt.apps)
		}
	}
	if hostState(t) != before {
		t.Errorf("users changed after refused apps")
	}
}
