package colondb

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestScan(t *testing.T) {
	p := filepath.Join(t.TempDir(), "passwd")
	data := "root:x:0:0:root:/root:/bin/bash\n\n# comment\nbroken:line\nopus-blog:x:70000:70000:Opus project blog:/:/usr/sbin/nologin\nlast:x:1:1::/:/bin/sh\n"
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := Scan(p, PasswdFields, func(f []string) bool { names = append(names, f[0]); return f[0] != "opus-blog" }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "root,opus-blog" {
		t.Errorf("scanned %v, want root and opus-blog (then stopped)", names)
	}
	if err := Scan(filepath.Join(t.TempDir(), "missing"), PasswdFields, func([]string) bool { return true }); err == nil {
		t.Error("a missing database read without error")
	}
	long := filepath.Join(t.TempDir(), "long")
	os.WriteFile(long, []byte(strings.Repeat("a", MaxLine+1)+"\n"), 0o644)
	if err := Scan(long, PasswdFields, func([]string) bool { return true }); err == nil {
		t.Error("a line beyond MaxLine read without error")
	}
}
