package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Issue 19 review: hostile tenants against backup and restore.

// mediaRaceAttack is tenant code that, in its mod_wsgi daemon, keeps
// swapping data/media/race between a directory holding one file and a
// link to /root (which the project's user cannot read, but root can),
// until data/stop-race exists: a backup's media copy that followed the
// link, or opened by a path it had checked, would carry what is beneath
// it.
const mediaRaceAttack = `    import threading, time
    def race():
        media = PROJECT_ROOT / "data" / "media"
        stop = PROJECT_ROOT / "data" / "stop-race"
        d, swap = media / "race", media / "race.swap"
        end = time.time() + 600
        while time.time() < end and not stop.exists():
            try:
                media.mkdir(exist_ok=True)
                if not d.is_symlink() and not d.exists():
                    d.mkdir()
                    (d / "f.txt").write_text("tenant\n")
                d.rename(swap)
                os.symlink("/root", str(d))
                time.sleep(0.0002)
                os.unlink(str(d))
                swap.rename(d)
            except OSError:
                time.sleep(0.001)
    if "mod_wsgi" in sys.modules:
        threading.Thread(target=race, daemon=True).start()
`

// mediaEntries reads the media.tar part of backup file: its entries'
// names and, for regular files, their content.
func mediaEntries(t *testing.T, file string) map[string]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("backup %s has no media.tar: %v", file, err)
		}
		if h.Name != "media.tar" {
			continue
		}
		out := map[string]string{}
		mt := tar.NewReader(io.LimitReader(tr, h.Size))
		for {
			m, err := mt.Next()
			if err == io.EOF {
				return out
			}
			if err != nil {
				t.Fatalf("media.tar: %v", err)
			}
			var b bytes.Buffer
			if _, err := io.Copy(&b, io.LimitReader(mt, 1<<20)); err != nil {
				t.Fatal(err)
			}
			out[fmt.Sprintf("%c %s", m.Typeflag, strings.TrimSuffix(m.Name, "/"))] = b.String()
		}
	}
}

// TestAttack19MediaRacesDuringBackup: while the project's own code swaps
// a media directory with a link to /root as fast as it can, every backup
// either fails naming what it met, or holds the tenant's own directory
// and file and nothing else: no entry from beyond data/media, never a
// link followed. Then, with the race stopped and data/.media.new and
// data/.media.old planted as links (to /root and to the project's own
// secrets), a restore --replace puts the media back in place of the
// links without touching where they point. The host's accounts are as
// before.
func TestAttack19MediaRacesDuringBackup(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	h.deploy(t, 0, name, hostileApp(t, "mediarace", mediaRaceAttack))
	get(t, webClient(), h.url(name, "http", "/mediarace/"))
	media := filepath.Join(h.cfg.BaseDir, "projects", name, "data", "media")
	deadline := time.Now().Add(time.Minute)
	for !exists(filepath.Join(media, "race.swap")) && !exists(filepath.Join(media, "race", "f.txt")) {
		if time.Now().After(deadline) {
			t.Fatal("the tenant's race never started in its daemon")
		}
		time.Sleep(100 * time.Millisecond)
	}
	before := hostState(t)
	rootList := func() string {
		entries, _ := os.ReadDir("/root")
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return strings.Join(names, ",")
	}
	rootBefore := rootList()

	dir := t.TempDir()
	good := ""
	allowed := map[string]bool{"5 race": true, "0 race/f.txt": true, "5 race.swap": true, "0 race.swap/f.txt": true}
	for i := range 6 {
		file := filepath.Join(dir, fmt.Sprintf("b%d.opus", i))
		r := h.ctl(t, 0, "", "backup", name, "-o", file)
		if strings.Contains(r.out+r.err, "root:") {
			t.Errorf("backup %d: something of /root reached the caller: %s", i, r.err)
		}
		if r.code != 0 {
			if exists(file) {
				t.Errorf("backup %d failed (%s) but left %s", i, r.err, file)
			}
			t.Logf("backup %d refused: %s", i, strings.TrimSpace(r.err))
			continue
		}
		for entry, content := range mediaEntries(t, file) {
			if !allowed[entry] {
				t.Errorf("backup %d's media hold %q, which is not the tenant's own", i, entry)
			}
			if strings.HasPrefix(entry, "0 ") && content != "tenant\n" {
				t.Errorf("backup %d's %s holds %q", i, entry, content)
			}
		}
		good = file
	}

	// The race stops; the next backup is whole.
	h.asProject(t, name, "touch data/stop-race")
	time.Sleep(time.Second)
	h.asProject(t, name, "rm -rf data/media/race.swap; rm -f data/media/race; mkdir -p data/media/race && echo tenant > data/media/race/f.txt")
	if good == "" {
		good = filepath.Join(dir, "calm.opus")
		h.mustCtl(t, 0, "backup", name, "-o", good)
	}

	// Links planted where the restore builds and sets aside the media.
	h.asProject(t, name, "rm -rf data/media/race && ln -s /root data/.media.new && ln -s ../secrets data/.media.old")
	secrets := filepath.Join(h.cfg.BaseDir, "projects", name, "secrets")
	secretsBefore, err := os.ReadDir(secrets)
	if err != nil || len(secretsBefore) == 0 {
		t.Fatalf("the project's secrets directory: %v %v", secretsBefore, err)
	}
	h.mustCtl(t, 0, "restore", good, "--replace")
	data := filepath.Join(h.cfg.BaseDir, "projects", name, "data")
	for _, n := range []string{".media.new", ".media.old"} {
		if _, err := os.Lstat(filepath.Join(data, n)); err == nil {
			t.Errorf("data/%s is still there after the restore", n)
		}
	}
	if fi, err := os.Lstat(media); err != nil || !fi.IsDir() {
		t.Fatalf("data/media after the restore: %v %v, want a directory", fi, err)
	}
	if b, err := os.ReadFile(filepath.Join(media, "race", "f.txt")); err != nil || string(b) != "tenant\n" {
		t.Errorf("restored media/race/f.txt: %q %v", b, err)
	}
	if after, err := os.ReadDir(secrets); err != nil || len(after) != len(secretsBefore) {
		t.Errorf("the project's secrets after the restore: %v %v, before %v", after, err, secretsBefore)
	}
	if got := rootList(); got != rootBefore {
		t.Errorf("/root changed: %s, was %s", got, rootBefore)
	}
	if hostState(t) != before {
		t.Error("the host's accounts changed")
	}
}
