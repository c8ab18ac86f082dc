package packtest

import (
	"archive/zip"
	"bytes"
	"io"
	"io/fs"
	"testing"
)

// ZipEntry is one entry of a test zip: a regular file unless Mode says
// otherwise (fs.ModeDir, fs.ModeSymlink with the link's target as Body,
// ...); permission bits 0644 when Mode has none.
type ZipEntry struct {
	Name, Body string
	Mode       fs.FileMode
}

// Zip returns a zip archive of the entries, in order, as zip tools write
// them (Unix modes, deflated).
func Zip(t testing.TB, entries ...ZipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.Name, Method: zip.Deflate}
		mode := e.Mode
		if mode.Perm() == 0 {
			mode |= 0o644
		}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, e.Body); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
