package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// galleryApp is a local app whose view serves a file of the project's
// media directory (Django's MEDIA_ROOT: data/media) and a digest of its
// SECRET_KEY, so a test sees that a restore brought back both.
func galleryApp(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "gallery")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"__init__.py": "",
		"urls.py":     "from django.urls import path\n\nfrom . import views\n\nurlpatterns = [path(\"\", views.index)]\n",
		"views.py": `import hashlib
import os

from django.conf import settings
from django.http import HttpResponse


def index(request):
    p = os.path.join(settings.MEDIA_ROOT, "sub", "hello.txt")
    try:
        with open(p) as f:
            media = f.read().strip()
    except OSError as e:
        media = "none (%s)" % e.strerror
    key = hashlib.sha256(settings.SECRET_KEY.encode()).hexdigest()[:16]
    return HttpResponse("media: %s\nkey: %s\n" % (media, key), content_type="text/plain")
`,
	}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// asProject runs a shell command as project name's user in its root
// directory, as its own code could.
func (h *host) asProject(t *testing.T, name, script string) {
	t.Helper()
	cmd := exec.Command("runuser", "-u", projUser(name), "--", "/bin/sh", "-c", script)
	cmd.Dir = filepath.Join(h.cfg.BaseDir, "projects", name)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as %s: %s: %v %s", name, script, err, out)
	}
}

// backedUpProject deploys notes and gallery as a new project with two
// notes and a media file, and returns its name and what its gallery page
// says.
func (h *host) backedUpProject(t *testing.T) (name, gallery string) {
	t.Helper()
	name = h.newProject(t)
	h.deploy(t, 0, name, localApp(t, "notes"), galleryApp(t))
	h.sqlAsProject(t, name, "INSERT INTO notes_note (text, created) VALUES ('alpha', datetime('now')), ('beta', datetime('now'))")
	h.asProject(t, name, "mkdir -p data/media/sub && echo 'hello from media' > data/media/sub/hello.txt")
	c := webClient()
	mustGet(t, c, h.url(name, "http", "/notes/"), "notes: 2")
	_, gallery = get(t, c, h.url(name, "http", "/gallery/"))
	if !strings.Contains(gallery, "media: hello from media") {
		t.Fatalf("before the backup the gallery says %q", gallery)
	}
	return name, gallery
}

// checkRestored checks that project name serves the notes, media file and
// secret key of the project backed up.
func (h *host) checkRestored(t *testing.T, name, gallery string) {
	t.Helper()
	c := webClient()
	mustGet(t, c, h.url(name, "http", "/notes/"), "notes: 2")
	mustGet(t, c, h.url(name, "http", "/notes/"), "- alpha")
	if _, got := get(t, c, h.url(name, "http", "/gallery/")); got != gallery {
		t.Errorf("restored %s's gallery says %q, want %q (the same media file and secret key)", name, got, gallery)
	}
}

// TestBackupRestoreRoundTrip: a project with data (rows written as its
// code would) and a media file is backed up to a file the caller owns
// (0600); another user cannot back it up (not found, no file); the project
// is destroyed and restored from the file: the same notes, media file and
// SECRET_KEY are served, by a RESTORE operation. Restored again --as
// another name, the copy runs beside the original.
func TestBackupRestoreRoundTrip(t *testing.T) {
	h := needHost(t)
	name, gallery := h.backedUpProject(t)
	dir := t.TempDir()
	file := filepath.Join(dir, name+".opus")

	// Not the owner: as if it did not exist, and nothing written (in a
	// directory of the other user's).
	otherDir, err := os.MkdirTemp("", "opus-backup-other-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(otherDir) })
	if err := os.Chown(otherDir, int(h.otherID), int(h.otherGID)); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(otherDir, "other.opus")
	r := h.ctl(t, h.otherID, "", "backup", name, "-o", other)
	if r.code != 1 || !strings.Contains(r.err, "not found") {
		t.Errorf("backup by another user: exit %d %s, want 1 and not found", r.code, r.err)
	}
	if entries, _ := os.ReadDir(otherDir); len(entries) != 0 {
		t.Errorf("a refused backup left files: %v", entries)
	}

	out := h.ctl(t, 0, "", "backup", name, "-o", file)
	if out.code != 0 {
		t.Fatalf("backup: exit %d %s", out.code, out.err)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
		t.Fatalf("backup file: %v %v, want a non-empty file of mode 0600", fi, err)
	}
	parts := tarNames(t, file)
	for _, want := range []string{"manifest.json", "secrets.json", "database.sqlite3", "media.tar"} {
		if !contains(parts, want) {
			t.Errorf("backup holds %v, no %s", parts, want)
		}
	}
	if r := h.ctl(t, 0, "", "backup", name, "-o", file); r.code != 2 || !strings.Contains(r.err, "exists") {
		t.Errorf("backup over an existing file: exit %d %s, want 2 (never overwritten)", r.code, r.err)
	}

	h.mustCtl(t, 0, "destroy", name, "--yes")
	restore := h.mustCtl(t, 0, "restore", file)
	if !strings.Contains(restore, "restored data snapshot") || !strings.Contains(restore, "media files") {
		t.Errorf("restore does not say it put the data and media back:\n%s", restore)
	}
	h.checkRestored(t, name, gallery)
	if kind := h.newestOpKind(t, name); kind != "OPERATION_KIND_RESTORE" {
		t.Errorf("the restore's operation is of kind %q, want RESTORE", kind)
	}

	// --as: a second copy beside the first.
	copyName := h.newProject(t)
	h.mustCtl(t, 0, "restore", file, "--as", copyName)
	h.checkRestored(t, copyName, gallery)
	h.checkRestored(t, name, gallery)
}

// tarNames lists the files of a gzipped tar.
func tarNames(t *testing.T, file string) []string {
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
	var out []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name)
	}
}

// TestRestoreOverBrokenProject: a project whose database was lost (the
// file deleted) is restored over with --replace and serves its notes
// again; without --replace the restore is refused with nothing changed.
func TestRestoreOverBrokenProject(t *testing.T) {
	h := needHost(t)
	name, gallery := h.backedUpProject(t)
	file := filepath.Join(t.TempDir(), name+".opus")
	h.mustCtl(t, 0, "backup", name, "-o", file)

	// Break it: the database is gone, the media damaged.
	if err := os.Remove(filepath.Join(h.cfg.BaseDir, "projects", name, "data", "db.sqlite3")); err != nil {
		t.Fatal(err)
	}
	h.asProject(t, name, "echo damaged > data/media/sub/hello.txt")
	if code, body := get(t, webClient(), h.url(name, "http", "/notes/")); code == 200 && strings.Contains(body, "notes: 2") {
		t.Fatalf("the project still serves its notes without its database: %d %q", code, body)
	}

	before := hostState(t)
	r := h.ctl(t, 0, "", "restore", file)
	if r.code != 1 || !strings.Contains(r.err, "--replace") {
		t.Errorf("restore over an existing project without --replace: exit %d %s, want 1 and a hint at --replace", r.code, r.err)
	}
	if hostState(t) != before {
		t.Error("a refused restore changed the host's accounts")
	}
	h.mustCtl(t, 0, "restore", file, "--replace")
	h.checkRestored(t, name, gallery)
	if kind := h.newestOpKind(t, name); kind != "OPERATION_KIND_RESTORE" {
		t.Errorf("the restore's operation is of kind %q, want RESTORE", kind)
	}
}

// TestRestoreOverDamagedDatabase: a project whose SQLite file was
// overwritten (no longer a database SQLite can read) is brought back by
// restore --replace, as README promises for damaged data: the damaged
// file cannot be copied first, so the restore says so and goes on.
func TestRestoreOverDamagedDatabase(t *testing.T) {
	h := needHost(t)
	name, gallery := h.backedUpProject(t)
	file := filepath.Join(t.TempDir(), name+".opus")
	h.mustCtl(t, 0, "backup", name, "-o", file)

	h.asProject(t, name, "head -c 65536 /dev/urandom > data/db.sqlite3")
	if code, body := get(t, webClient(), h.url(name, "http", "/notes/")); code == 200 && strings.Contains(body, "notes: 2") {
		t.Fatalf("the project still serves its notes with a damaged database: %d %q", code, body)
	}
	out := h.mustCtl(t, 0, "restore", file, "--replace")
	if !strings.Contains(out, "damaged") {
		t.Errorf("the restore does not say the damaged database was not copied:\n%s", out)
	}
	h.checkRestored(t, name, gallery)
}

// TestBackupRefusesHostileMedia: tenant code plants a symbolic link to
// /etc/shadow and a FIFO in its media directory (AppConfig.ready(), at
// every manage.py and in the daemon): the backup neither follows nor
// opens them, fails at once naming what it found, and writes no file.
// A sparse file larger than the host's bound fails it the same way,
// without being read.
func TestBackupRefusesHostileMedia(t *testing.T) {
	h := needHost(t)
	attack := `    media = PROJECT_ROOT / "data" / "media"
    media.mkdir(exist_ok=True)
    if not (media / "shadow").is_symlink():
        os.symlink("/etc/shadow", str(media / "shadow"))
    if not (media / "zfifo").exists():
        os.mkfifo(str(media / "zfifo"))
`
	name := h.newProject(t)
	h.deploy(t, 0, name, hostileApp(t, "mediaattack", attack))
	dir := t.TempDir()
	try := func(want string) {
		t.Helper()
		file := filepath.Join(dir, "b.opus")
		start := time.Now()
		r := h.ctl(t, 0, "", "backup", name, "-o", file)
		if r.code == 0 || !strings.Contains(r.err, want) {
			t.Errorf("backup with %s in media: exit %d %s, want a refusal naming it", want, r.code, r.err)
		}
		if d := time.Since(start); d > time.Minute {
			t.Errorf("the refusal took %s", d)
		}
		if exists(file) {
			t.Errorf("a refused backup left %s", file)
		}
		if strings.Contains(r.out+r.err, "root:") {
			t.Errorf("/etc/shadow's content reached the caller")
		}
	}
	try("media/shadow is a symbolic link")
	h.asProject(t, name, "rm data/media/shadow")
	try("media/zfifo is a FIFO")
	h.asProject(t, name, "rm data/media/zfifo && truncate -s 1T data/media/huge")
	try("larger than")
}

// TestRestoreRefusesBadFile: a damaged or forged backup (cut short, a byte
// changed, a part the manifest does not list, a name leaving the
// archive, not gzip at all) is refused as what was given (exit 2) before
// anything is made: no project, no user, no snapshot.
func TestRestoreRefusesBadFile(t *testing.T) {
	h := needHost(t)
	name, _ := h.backedUpProject(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.opus")
	h.mustCtl(t, 0, "backup", name, "-o", good)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	target := h.newProject(t)
	flipped := bytes.Clone(data)
	flipped[len(flipped)/2] ^= 0xff
	cases := map[string][]byte{
		"cut short":    data[:len(data)/2],
		"byte changed": flipped,
		"not gzip":     []byte("this is not a backup\n"),
		"extra part":   rewriteBackup(t, data, func(tw *tar.Writer) { addTar(t, tw, "notes.txt", []byte("x")) }),
		"escaping":     rewriteBackup(t, data, func(tw *tar.Writer) { addTar(t, tw, "../../etc/evil", []byte("x")) }),
		"media damaged": rewriteBackup(t, data, nil, func(name string, b []byte) []byte {
			if name == "media.tar" {
				b = bytes.Clone(b)
				b[0] ^= 1
			}
			return b
		}),
	}
	before := hostState(t)
	for what, content := range cases {
		f := filepath.Join(dir, strings.ReplaceAll(what, " ", "-")+".opus")
		if err := os.WriteFile(f, content, 0o600); err != nil {
			t.Fatal(err)
		}
		r := h.ctl(t, 0, "", "restore", f, "--as", target)
		if r.code != 2 || !strings.Contains(r.err, "not a valid Opus backup") {
			t.Errorf("%s: exit %d %s, want 2 and a refusal of the file", what, r.code, r.err)
		}
	}
	if r := h.ctl(t, 0, "", "show", target); r.code != 1 {
		t.Errorf("after refused restores, show %s: exit %d, want 1 (no such project)", target, r.code)
	}
	if exists(filepath.Join(h.cfg.BaseDir, "snapshots", target)) || exists(filepath.Join(h.cfg.BaseDir, "projects", target)) {
		t.Error("a refused restore left files of the project")
	}
	if hostState(t) != before {
		t.Error("a refused restore changed the host's accounts")
	}
}

// rewriteBackup copies a backup's tar, changing each part with edit (if
// given), then adds what extra writes.
func rewriteBackup(t *testing.T, data []byte, extra func(*tar.Writer), edit ...func(name string, b []byte) []byte) []byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range edit {
			b = e(h.Name, b)
		}
		addTar(t, tw, h.Name, b)
	}
	if extra != nil {
		extra(tw)
	}
	tw.Close()
	zw.Close()
	return out.Bytes()
}

func addTar(t *testing.T, tw *tar.Writer, name string, b []byte) {
	t.Helper()
	if err := tw.WriteHeader(&tar.Header{Name: name, Size: int64(len(b)), Mode: 0o600, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(b); err != nil {
		t.Fatal(err)
	}
}

// forgeDatabase returns backup data whose database part is replaced by
// content, with the manifest's size and SHA-256 of it updated to match:
// a file that passes every check of the format and fails only when the
// restore loads it.
func forgeDatabase(t *testing.T, data, content []byte) []byte {
	t.Helper()
	sum := sha256.Sum256(content)
	return rewriteBackup(t, data, nil, func(name string, b []byte) []byte {
		switch name {
		case "database.sqlite3":
			return content
		case "manifest.json":
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			for _, p := range m["parts"].([]any) {
				if part := p.(map[string]any); part["name"] == "database.sqlite3" {
					part["size"], part["sha256"] = len(content), hex.EncodeToString(sum[:])
				}
			}
			out, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		return b
	})
}

// TestRestoreFailsWhole: a restore that fails part way (its database
// cannot be loaded) is undone whole. Over an existing project (--replace)
// the project is put back as it was just before: its code, its database,
// its media and its own secret key (the backup came from another
// project). As a new project (--as), nothing of it is left: no project,
// no user, no files.
func TestRestoreFailsWhole(t *testing.T) {
	h := needHost(t)
	src, _ := h.backedUpProject(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.opus")
	h.mustCtl(t, 0, "backup", src, "-o", good)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	forged := filepath.Join(dir, "forged.opus")
	if err := os.WriteFile(forged, forgeDatabase(t, data, []byte("this is not an SQLite database, though the manifest says it is fine")), 0o600); err != nil {
		t.Fatal(err)
	}

	name := h.newProject(t)
	h.deploy(t, 0, name, localApp(t, "notes"), galleryApp(t))
	h.sqlAsProject(t, name, "INSERT INTO notes_note (text, created) VALUES ('gamma', datetime('now'))")
	h.asProject(t, name, "mkdir -p data/media/sub && echo 'its own media' > data/media/sub/hello.txt")
	c := webClient()
	mustGet(t, c, h.url(name, "http", "/notes/"), "notes: 1")
	_, gallery := get(t, c, h.url(name, "http", "/gallery/"))
	if !strings.Contains(gallery, "its own media") {
		t.Fatalf("gallery says %q", gallery)
	}

	r := h.ctl(t, 0, "", "restore", forged, "--replace", "--as", name)
	if r.code != 1 || !strings.Contains(r.out+r.err, "file is not a database") || !strings.Contains(r.out+r.err, "Nothing of the change was applied") {
		t.Errorf("restore of an unloadable database: exit %d, want 1 saying why and that it was undone\n%s\n%s", r.code, r.out, r.err)
	}
	mustGet(t, c, h.url(name, "http", "/notes/"), "notes: 1")
	mustGet(t, c, h.url(name, "http", "/notes/"), "- gamma")
	if _, got := get(t, c, h.url(name, "http", "/gallery/")); got != gallery {
		t.Errorf("after the failed restore the gallery says %q, want %q (its own media and secret key)", got, gallery)
	}

	before := hostState(t)
	other := h.newProject(t)
	r = h.ctl(t, 0, "", "restore", forged, "--as", other)
	if r.code != 1 || !strings.Contains(r.err, "Nothing of project "+other+" was kept") {
		t.Errorf("restore --as of an unloadable database: exit %d, want 1 saying nothing was kept\n%s", r.code, r.err)
	}
	if r := h.ctl(t, 0, "", "show", other); r.code != 1 {
		t.Errorf("after a failed restore, show %s: exit %d, want 1 (no such project)", other, r.code)
	}
	if exists(filepath.Join(h.cfg.BaseDir, "projects", other)) || exists(filepath.Join(h.cfg.BaseDir, "snapshots", other)) {
		t.Error("a failed restore left the project's files")
	}
	if hostState(t) != before {
		t.Error("a failed restore left accounts on the host")
	}
}

// TestBackupRestorePostgreSQL: a project whose PostgreSQL database Opus
// provisioned is backed up with pg_dump, destroyed (its database
// dropped) and restored into a database provisioned anew, with its rows.
func TestBackupRestorePostgreSQL(t *testing.T) {
	h := needHost(t)
	port := postgres(t)
	provisioningRole(t)
	admin := "host=/var/run/postgresql port=" + port + " user=" + daemonUser + " dbname=postgres"
	h.opusdWith(t, "postgres-backup", "postgres_admin "+admin+"\n")
	name := h.newProject(t)
	db := "opus_" + name
	notePG(t, db)
	h.mustCtl(t, 0, "create", name, "--app", localApp(t, "notes"), "--database", "provision")
	if out, err := psql(t, db, "INSERT INTO notes_note (text, created) VALUES ('alpha', now()), ('beta', now())"); err != nil {
		t.Fatalf("insert: %v %s", err, out)
	}
	c := webClient()
	mustGet(t, c, h.url(name, "http", "/notes/"), "notes: 2")
	file := filepath.Join(t.TempDir(), "pg.opus")
	h.mustCtl(t, 0, "backup", name, "-o", file)
	if parts := tarNames(t, file); !contains(parts, "database.pgdump") || contains(parts, "database.sqlite3") {
		t.Errorf("backup of a PostgreSQL project holds %v", parts)
	}
	h.mustCtl(t, 0, "destroy", name, "--yes")
	if role, owner := pgExists(t, db); role || owner != "" {
		t.Fatalf("destroy left the provisioned database: role %v owner %q", role, owner)
	}
	h.mustCtl(t, 0, "restore", file)
	mustGet(t, c, h.url(name, "http", "/notes/"), "notes: 2")
	mustGet(t, c, h.url(name, "http", "/notes/"), "- alpha")
	if role, owner := pgExists(t, db); !role || owner != db {
		t.Errorf("after the restore: role %v, database owner %q; want both %s", role, owner, db)
	}
}

// TestRestoredDataSecured: the database and media files a restore loads
// (written as the project's user) get the data policy at once, group
// opus, as every deploy leaves them: so 'opusctl df' measures them
// exactly, not ">= SIZE" of a media directory opusd cannot open.
func TestRestoredDataSecured(t *testing.T) {
	h := needHost(t)
	name, gallery := h.backedUpProject(t)
	file := filepath.Join(t.TempDir(), name+".opus")
	h.mustCtl(t, 0, "backup", name, "-o", file)
	copyName := h.newProject(t)
	h.mustCtl(t, 0, "restore", file, "--as", copyName)
	h.checkRestored(t, copyName, gallery)

	data := filepath.Join(h.cfg.BaseDir, "projects", copyName, "data")
	for _, p := range []string{filepath.Join(data, "media"), filepath.Join(data, "media", "sub", "hello.txt"), filepath.Join(data, "db.sqlite3")} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Gid != h.opusGID || fi.Mode().Perm()&0o007 != 0 {
			t.Errorf("restored %s: group %d mode %v, want group opus (%d) and nothing for others, as the data policy says", p, st.Gid, fi.Mode(), h.opusGID)
		}
	}
	d := h.df(t, 0, copyName)
	if len(d.Projects) != 1 {
		t.Fatalf("df %s: %+v", copyName, d)
	}
	if got, want := jsonInt(d.Projects[0].Data.Bytes), filesSize(t, data); got != want || d.Projects[0].Data.AtLeast {
		t.Errorf("df of the restored project's data: %d bytes (at least: %v), the disk %d", got, d.Projects[0].Data.AtLeast, want)
	}
}
