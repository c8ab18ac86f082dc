package backup

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

var testLimits = Limits{Data: 1 << 10, App: 1 << 10}

func project() *opusv1.CreateProjectRequest {
	return &opusv1.CreateProjectRequest{Name: "blog", Admin: true, Apps: []*opusv1.AppSpec{
		{Name: "news", Source: &opusv1.AppSource{Kind: &opusv1.AppSource_Git{Git: &opusv1.GitSource{Url: "https://example.com/news.git", Ref: strings.Repeat("a", 40)}}}},
		{Name: "polls", Source: &opusv1.AppSource{Kind: &opusv1.AppSource_Upload{Upload: &opusv1.UploadedSource{Digest: "sha256:" + strings.Repeat("b", 64)}}}},
	}}
}

func tmpFile(t testing.TB, content string) *os.File {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "part")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(content)
	return f
}

// goodBackup is a valid backup of project() with every part.
func goodBackup(t testing.TB) []byte {
	t.Helper()
	w, err := NewWriter(project(), "v1.2.3", time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	sec, _ := json.Marshal(Secrets{SecretKey: "k3y"})
	if err := w.AddBytes(SecretsFile, sec, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{SQLiteFile: "sqlite", MediaFile: "media", AppFile("polls", true): "polls archive"} {
		if err := w.Add(name, tmpFile(t, content)); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	if _, err := w.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// rewrite copies backup b's tar through edit, which may change, drop
// (nil) or add entries; then extra entries are appended.
func rewrite(t *testing.T, b []byte, edit func(h *tar.Header, body []byte) []byte, extra ...func(*tar.Writer)) []byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		if edit != nil {
			if body = edit(h, body); body == nil {
				continue
			}
		}
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	for _, e := range extra {
		e(tw)
	}
	tw.Close()
	zw.Close()
	return out.Bytes()
}

func add(name string, body []byte, typ byte) func(*tar.Writer) {
	return func(tw *tar.Writer) {
		tw.WriteHeader(&tar.Header{Name: name, Size: int64(len(body)), Typeflag: typ, Mode: 0o600})
		tw.Write(body)
	}
}

// editManifest changes the manifest (as a map) of a backup.
func editManifest(fn func(m map[string]any)) func(h *tar.Header, body []byte) []byte {
	return func(h *tar.Header, body []byte) []byte {
		if h.Name != ManifestFile {
			return body
		}
		var m map[string]any
		json.Unmarshal(body, &m)
		fn(m)
		out, _ := json.Marshal(m)
		return out
	}
}

func editProject(fn func(p map[string]any)) func(h *tar.Header, body []byte) []byte {
	return editManifest(func(m map[string]any) { fn(m["project"].(map[string]any)) })
}

// TestReadRoundTrip: what Writer writes, Read reads back whole.
func TestReadRoundTrip(t *testing.T) {
	a, err := Read(bytes.NewReader(goodBackup(t)), t.TempDir(), testLimits)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Project.GetName() != "blog" || len(a.Project.GetApps()) != 2 || !a.Project.GetAdmin() {
		t.Errorf("project %v", a.Project)
	}
	if a.Secrets.SecretKey != "k3y" || a.Manifest.OpusVersion != "v1.2.3" || !a.Manifest.Created.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("secrets %+v manifest %+v", a.Secrets, a.Manifest)
	}
	for name, want := range map[string]string{SQLiteFile: "sqlite", MediaFile: "media", a.AppArchive("polls"): "polls archive"} {
		f, err := a.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(f)
		f.Close()
		if string(got) != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if _, err := a.Open(ManifestFile); err == nil {
		t.Error("the manifest opens as a part")
	}
	dir := a.dir
	a.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Close left %s", dir)
	}
}

// TestReadRefuses: every kind of damaged or forged backup is refused
// (ErrInvalid, with a message naming the fault) and leaves nothing in the
// temporary directory.
func TestReadRefuses(t *testing.T) {
	good := goodBackup(t)
	tests := []struct {
		name string
		file func(t *testing.T) []byte
		want string
	}{
		{"empty", func(t *testing.T) []byte { return nil }, "not gzip"},
		{"not gzip", func(t *testing.T) []byte { return []byte("PK\x03\x04 a zip file") }, "not gzip"},
		{"cut short", func(t *testing.T) []byte { return good[:len(good)-40] }, "cut short"},
		{"cut in half", func(t *testing.T) []byte { return good[:len(good)/2] }, "cut short"},
		{"cut after the gzip header", func(t *testing.T) []byte { return good[:12] }, "cut short"},
		{"gzip trailer cut", func(t *testing.T) []byte { return good[:len(good)-4] }, "cut short"},
		{"last byte cut", func(t *testing.T) []byte { return good[:len(good)-1] }, "cut short"},
		{"trailing data", func(t *testing.T) []byte {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write([]byte("more"))
			zw.Close()
			return append(bytes.Clone(good), b.Bytes()...)
		}, "after the end"},
		{"unknown part", func(t *testing.T) []byte { return rewrite(t, good, nil, add("evil.sh", []byte("x"), tar.TypeReg)) }, "unexpected file"},
		{"path out", func(t *testing.T) []byte {
			return rewrite(t, good, nil, add("../../etc/cron.d/x", []byte("x"), tar.TypeReg))
		}, "unexpected file"},
		{"absolute", func(t *testing.T) []byte { return rewrite(t, good, nil, add("/etc/passwd", []byte("x"), tar.TypeReg)) }, "unexpected file"},
		{"app name not an app", func(t *testing.T) []byte {
			return rewrite(t, good, nil, add("apps/../x.tar", []byte("x"), tar.TypeReg))
		}, "unexpected file"},
		{"symlink part", func(t *testing.T) []byte {
			return rewrite(t, good, func(h *tar.Header, b []byte) []byte {
				if h.Name == MediaFile {
					return nil
				}
				return b
			}, func(tw *tar.Writer) {
				tw.WriteHeader(&tar.Header{Name: MediaFile, Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"})
			})
		}, "not a regular file"},
		{"twice", func(t *testing.T) []byte { return rewrite(t, good, nil, add(SecretsFile, []byte("{}"), tar.TypeReg)) }, "twice"},
		{"manifest not first", func(t *testing.T) []byte {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			tw := tar.NewWriter(zw)
			add(SecretsFile, []byte("{}"), tar.TypeReg)(tw)
			tw.Close()
			zw.Close()
			return b.Bytes()
		}, "first file"},
		{"no manifest", func(t *testing.T) []byte {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			tar.NewWriter(zw).Close()
			zw.Close()
			return b.Bytes()
		}, "no manifest"},
		{"part too large", func(t *testing.T) []byte {
			return rewrite(t, good, func(h *tar.Header, b []byte) []byte {
				if h.Name == SQLiteFile {
					return make([]byte, testLimits.Data+1)
				}
				return b
			})
		}, "more than"},
		{"part changed", func(t *testing.T) []byte {
			return rewrite(t, good, func(h *tar.Header, b []byte) []byte {
				if h.Name == SQLiteFile {
					return []byte("SQLITE")
				}
				return b
			})
		}, "damaged"},
		{"part dropped", func(t *testing.T) []byte {
			return rewrite(t, good, func(h *tar.Header, b []byte) []byte {
				if h.Name == MediaFile {
					return nil
				}
				return b
			})
		}, "not in the file"},
		{"part not listed", func(t *testing.T) []byte {
			return rewrite(t, good, editManifest(func(m map[string]any) {
				parts := m["parts"].([]any)
				m["parts"] = parts[:len(parts)-1]
			}))
		}, "not listed"},
		{"other format", func(t *testing.T) []byte {
			return rewrite(t, good, editManifest(func(m map[string]any) { m["format"] = "zip" }))
		}, "format"},
		{"newer version", func(t *testing.T) []byte {
			return rewrite(t, good, editManifest(func(m map[string]any) { m["version"] = 2 }))
		}, "version 2"},
		{"unknown manifest field", func(t *testing.T) []byte {
			return rewrite(t, good, editManifest(func(m map[string]any) { m["owner_uid"] = 0 }))
		}, "unknown field"},
		{"unknown project field", func(t *testing.T) []byte {
			return rewrite(t, good, editProject(func(p map[string]any) { p["ownerUid"] = 0 }))
		}, "project"},
		{"bad project name", func(t *testing.T) []byte {
			return rewrite(t, good, editProject(func(p map[string]any) { p["name"] = "../root" }))
		}, "project name"},
		{"bad app name", func(t *testing.T) []byte {
			return rewrite(t, good, editProject(func(p map[string]any) {
				p["apps"].([]any)[0].(map[string]any)["name"] = "os"
			}))
		}, "app"},
		{"upload without archive", func(t *testing.T) []byte {
			return rewrite(t, good, editProject(func(p map[string]any) {
				p["apps"].([]any)[1].(map[string]any)["name"] = "other"
			}))
		}, "archive is not in the file"},
		{"bad secrets", func(t *testing.T) []byte {
			b := rewrite(t, good, func(h *tar.Header, b []byte) []byte {
				if h.Name == SecretsFile {
					return []byte(`{"secret_key": "a\nb"}`)
				}
				return b
			})
			// The manifest's record of the secrets must match them.
			return fixSums(t, b)
		}, "secret key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			a, err := Read(bytes.NewReader(tt.file(t)), tmp, testLimits)
			if err == nil {
				a.Close()
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrInvalid saying %q", err, tt.want)
			}
			if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
				t.Errorf("left %v", entries)
			}
		})
	}
}

// fixSums rewrites the manifest's parts to match the parts of b.
func fixSums(t *testing.T, b []byte) []byte {
	t.Helper()
	w := &Writer{}
	var manifest Manifest
	var parts []string
	rewrite(t, b, func(h *tar.Header, body []byte) []byte {
		if h.Name == ManifestFile {
			json.Unmarshal(body, &manifest)
			return body
		}
		parts = append(parts, h.Name)
		f := tmpFile(t, string(body))
		if err := w.Add(h.Name, f); err != nil {
			t.Fatal(err)
		}
		return body
	})
	w.m = manifest
	var out bytes.Buffer
	if _, err := w.WriteTo(&out); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestReadBoundsTotal: a stream larger than Limits.Total is refused at the
// bound, not read to its end (a gzip bomb of zeros).
func TestReadBoundsTotal(t *testing.T) {
	l := Limits{Data: 1 << 10, App: 1 << 10}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(make([]byte, l.Total()+(1<<20)))
	zw.Close()
	_, err := Read(bytes.NewReader(b.Bytes()), t.TempDir(), l)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
}

// FuzzParseManifest: any bytes either parse into a manifest of the known
// format whose parts are all known names, or are refused with ErrInvalid;
// never a panic.
func FuzzParseManifest(f *testing.F) {
	gz, _ := gzip.NewReader(bytes.NewReader(goodBackup(f)))
	tr := tar.NewReader(gz)
	tr.Next()
	m, _ := io.ReadAll(tr)
	f.Add(m)
	f.Add([]byte(`{"format":"opus-backup","version":1,"project":{},"parts":[{"name":"../x","size":1,"sha256":""}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if m.Format != Format || m.Version != Version {
			t.Fatalf("accepted %+v", m)
		}
		for _, p := range m.Parts {
			if _, ok := partBound(p.Name, Limits{}); !ok || strings.Contains(p.Name, "..") || filepath.IsAbs(p.Name) {
				t.Fatalf("accepted part %q", p.Name)
			}
		}
	})
}

// FuzzRead: any file is read within its bounds to an archive whose
// project name and app names are valid, or refused; never a panic, and
// nothing is left behind on refusal.
func FuzzRead(f *testing.F) {
	f.Add(goodBackup(f))
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		tmp := t.TempDir()
		a, err := Read(bytes.NewReader(data), tmp, testLimits)
		if err != nil {
			if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
				t.Fatalf("refused, but left %v", entries)
			}
			return
		}
		defer a.Close()
		if a.Project.GetName() == "" || len(a.Project.GetApps()) > MaxApps {
			t.Fatalf("accepted %v", a.Project)
		}
	})
}

// TestReadBoundsAppsTogether: the uploaded apps' archives are bounded
// together (they become the restorer's uploads), not only each.
func TestReadBoundsAppsTogether(t *testing.T) {
	l := testLimits
	l.Apps = 5
	_, err := Read(bytes.NewReader(goodBackup(t)), t.TempDir(), l)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "together") {
		t.Fatalf("err = %v, want a refusal of the apps' size together", err)
	}
}
