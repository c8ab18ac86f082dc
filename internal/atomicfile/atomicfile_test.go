package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := Write(p, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if b, _ := os.ReadFile(p); err != nil || string(b) != "secret" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("after Write: %q %v %v", b, fi.Mode(), err)
	}
	changed, err := WriteIfChanged(p, []byte("secret"), 0o600)
	if err != nil || changed {
		t.Errorf("the same data: changed=%v %v", changed, err)
	}
	changed, err = WriteIfChanged(p, []byte("secret"), 0o640)
	if fi, _ := os.Stat(p); err != nil || !changed || fi.Mode().Perm() != 0o640 {
		t.Errorf("a new mode: changed=%v %v %v", changed, fi.Mode(), err)
	}
	if changed, err = WriteIfChanged(p, []byte("other"), 0o640); err != nil || !changed {
		t.Errorf("new data: changed=%v %v", changed, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	if err := Write(filepath.Join(dir, "missing", "x"), nil, 0o644); err == nil {
		t.Error("Write into a missing directory succeeded")
	}
}
