package drift

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/config"
)

// TestIDFindings: inside project_uids, an account that is no project's is
// reported, and so are processes and temporary files of an id no project
// has now; the ids of current projects, and ids outside the range, are
// not.
func TestIDFindings(t *testing.T) {
	root := t.TempDir()
	write := func(p, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h := Host{BaseDir: filepath.Join(root, "base"), SitesDir: filepath.Join(root, "sites"),
		PasswdPath: filepath.Join(root, "passwd"), GroupPath: filepath.Join(root, "group"),
		ProcDir: filepath.Join(root, "proc"), TempDirs: []string{filepath.Join(root, "tmp")},
		UIDs: config.UIDRange{First: 70000, Last: 70099}}
	write(h.PasswdPath, strings.Join([]string{
		"root:x:0:0:root:/root:/bin/bash",
		"opus-blog:x:70001:70001:Opus project blog:/srv/opus/projects/blog:/usr/sbin/nologin",
		"alice:x:70050:70050::/home/alice:/bin/bash",          // in the range, not Opus's
		"bob:x:1000:1000::/home/bob:/bin/bash",                // outside
		"opus-fake:x:70060:70060:someone:/:/usr/sbin/nologin", // prefix without the marker
	}, "\n")+"\n")
	write(h.GroupPath, "root:x:0:\nopus-blog:x:70001:\nalice:x:70050:\nstaff:x:70070:\n")
	proc := func(pid, uid string) {
		write(filepath.Join(h.ProcDir, pid, "status"), "Name:\tpython3\nUid:\t"+uid+"\t"+uid+"\t"+uid+"\t"+uid+"\n")
	}
	proc("100", "70001") // the current project's daemon
	proc("200", "70002") // a destroyed project's detached process
	proc("201", "70002")
	proc("300", "0")
	write(filepath.Join(h.ProcDir, "self", "status"), "Uid:\t70002\t70002\t70002\t70002\n") // not a pid
	write(filepath.Join(root, "tmp", "own"), "x")
	write(filepath.Join(root, "tmp", "suid"), "x")
	if os.Geteuid() == 0 {
		os.Chown(filepath.Join(root, "tmp", "own"), 70001, 70001)
		os.Chown(filepath.Join(root, "tmp", "suid"), 70003, 70003)
	}
	got, _, err := h.Check(context.Background(), func(context.Context) ([]Project, error) {
		return []Project{{Name: "blog", Deployed: false}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	text := ""
	for _, f := range got {
		if f.Kind == KindUID || f.Kind == KindLeftover {
			kinds = append(kinds, f.Kind)
			text += f.Detail + "\n"
		}
	}
	want := []string{"user alice has id 70050", "user opus-fake has id 70060", "group alice has id 70050", "group staff has id 70070",
		"processes of uid 70002 still run (pids 200, 201)"}
	if os.Geteuid() == 0 {
		want = append(want, "files of uid 70003", filepath.Join(root, "tmp", "suid"))
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("findings lack %q:\n%s", w, text)
		}
	}
	for _, bad := range []string{"opus-blog", "bob", "70001", "pids 300", filepath.Join(root, "tmp", "own")} {
		if strings.Contains(text, bad) {
			t.Errorf("findings name %q, which is fine:\n%s", bad, text)
		}
	}
	if n := len(want) - 1; os.Geteuid() == 0 && len(kinds) != n || os.Geteuid() != 0 && len(kinds) != len(want) {
		t.Errorf("%d id findings: %v\n%s", len(kinds), kinds, text)
	}
}
