package e2e

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notesV2Migration changes data: it upper-cases every note and deletes
// "beta", and adds a column.
const notesV2Migration = `from django.db import migrations, models


def change(apps, schema_editor):
    Note = apps.get_model("notes", "Note")
    for n in Note.objects.all():
        n.text = n.text.upper()
        n.save()
    Note.objects.filter(text="BETA").delete()


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [
        migrations.AddField(model_name="note", name="tag", field=models.CharField(max_length=20, default="v2")),
        migrations.RunPython(change, migrations.RunPython.noop),
    ]
`

// sqlAsProject runs one SQL statement on a project's SQLite database as
// the project's user (as its own code would) and returns the rows, one a
// line, columns joined by "|".
func (h *host) sqlAsProject(t *testing.T, project, sql string) string {
	t.Helper()
	db := filepath.Join(h.cfg.BaseDir, "projects", project, "data", "db.sqlite3")
	cmd := exec.Command("runuser", "-u", projUser(project), "--", "/usr/bin/python3", "-I", "-c", `import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for r in c.execute(sys.argv[2]):
    print("|".join(map(str, r)))
c.commit()`, db, sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s on %s: %v\n%s", sql, db, err, out)
	}
	return strings.TrimSpace(string(out))
}

// dataAccess is how a test reads and writes a project's database.
type dataAccess struct {
	sql func(t *testing.T, sql string) string
	// now is the engine's SQL for the current time; columns lists the
	// columns of notes_note, one a line.
	now, columns string
}

// TestRollbackWithData: an update whose migration changes data takes a
// snapshot of the SQLite database first; rollback --with-data --yes puts
// the rows and the migration state back as they were before the update,
// says what is lost, and the data written since is gone. Without a
// terminal and without --yes it is refused with nothing changed.
func TestRollbackWithData(t *testing.T) {
	h := needHost(t)
	notes := localApp(t, "notes")
	name := h.newProject(t)
	h.deploy(t, 0, name, notes)
	h.checkRollbackWithData(t, name, notes, "sqlite", dataAccess{
		sql:     func(t *testing.T, sql string) string { return h.sqlAsProject(t, name, sql) },
		now:     "datetime('now')",
		columns: "SELECT name FROM pragma_table_info('notes_note')",
	})
}

// TestRollbackWithDataPostgreSQL is TestRollbackWithData on a PostgreSQL
// database given by its parameters (pg_dump and its restore as the
// project's role).
func TestRollbackWithDataPostgreSQL(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	dbURL, pwFile, _ := ownerDatabase(t, h, postgres(t), name)
	db := pgPrefix() + name
	notes := localApp(t, "notes")
	h.mustCtl(t, 0, "create", name, "--app", notes, "--database", dbURL, "--database-password-file", pwFile)
	h.checkRollbackWithData(t, name, notes, "postgresql", dataAccess{
		sql: func(t *testing.T, sql string) string {
			t.Helper()
			out, err := psql(t, db, sql)
			if err != nil {
				t.Fatalf("%s: %v %s", sql, err, out)
			}
			return strings.TrimSpace(out)
		},
		now:     "now()",
		columns: "SELECT column_name FROM information_schema.columns WHERE table_name = 'notes_note' ORDER BY ordinal_position",
	})
}

// checkRollbackWithData drives project name (notes deployed from the
// directory notes) through an update whose migration changes data and a
// rollback with data.
func (h *host) checkRollbackWithData(t *testing.T, name, notes, engine string, db dataAccess) {
	t.Helper()
	c := webClient()
	url := h.url(name, "http", "/notes/")
	mustGet(t, c, url, "notes: 0")
	db.sql(t, "INSERT INTO notes_note (text, created) VALUES ('alpha', "+db.now+"), ('beta', "+db.now+")")
	mustGet(t, c, url, "notes: 2")

	// v2: a migration that changes the data.
	if err := os.WriteFile(filepath.Join(notes, "migrations", "0002_upper.py"), []byte(notesV2Migration), 0o644); err != nil {
		t.Fatal(err)
	}
	models, _ := os.ReadFile(filepath.Join(notes, "models.py"))
	models = []byte(strings.Replace(string(models), "    created =", "    tag = models.CharField(max_length=20, default=\"v2\")\n    created =", 1))
	if err := os.WriteFile(filepath.Join(notes, "models.py"), models, 0o644); err != nil {
		t.Fatal(err)
	}
	out := h.mustCtl(t, 0, "apps", "update", name, "notes", notes)
	if !strings.Contains(out, "data snapshot") {
		t.Errorf("update took no data snapshot:\n%s", out)
	}
	mustGet(t, c, url, "notes: 1\n- ALPHA")
	// Written after the update: lost by the rollback with data.
	db.sql(t, "INSERT INTO notes_note (text, created, tag) VALUES ('gamma', "+db.now+", 'x')")
	mustGet(t, c, url, "notes: 2")

	// The copy is opusd's: in its own directory, which the project's
	// user can neither write nor read.
	dir := filepath.Join(h.cfg.BaseDir, "snapshots", name)
	opus, err := user.Lookup(h.cfg.OpusUser)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	// SQLite: one, before the update (the first deploy had no database
	// yet); PostgreSQL: the first deploy's too (its database existed).
	if err != nil || len(entries) == 0 {
		t.Fatalf("snapshots directory %s: %v, %v; want the update's snapshot", dir, entries, err)
	}
	paths := []string{dir}
	for _, e := range entries {
		paths = append(paths, filepath.Join(dir, e.Name()))
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); strconv.Itoa(int(st.Uid)) != opus.Uid || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: owner %d mode %v, want %s's and no access for others", p, st.Uid, fi.Mode(), h.cfg.OpusUser)
		}
	}

	revs := h.mustCtl(t, 0, "apps", "revisions", name, "notes")
	if !strings.Contains(revs, "Data snapshots") || !strings.Contains(revs, engine) {
		t.Errorf("apps revisions lists no %s data snapshot:\n%s", engine, revs)
	}

	// Without a terminal, --with-data needs --yes: nothing happens.
	gen := h.show(t, name).Generation
	before := hostState(t)
	if r := h.ctl(t, 0, "", "apps", "rollback", name, "notes", "--with-data"); r.code != 2 || !strings.Contains(r.err, "--yes") {
		t.Errorf("rollback --with-data without a terminal: exit %d, %s", r.code, r.err)
	}
	if h.show(t, name).Generation != gen || hostState(t) != before {
		t.Error("a refused rollback --with-data changed something")
	}
	mustGet(t, c, url, "notes: 2")

	r := h.ctl(t, 0, "", "apps", "rollback", name, "notes", "--with-data", "--yes")
	if r.code != 0 {
		h.dumpLogs(t)
		t.Fatalf("rollback --with-data: exit %d\n%s\n%s", r.code, r.out, r.err)
	}
	if !strings.Contains(r.err, "is lost") || !strings.Contains(r.err, "data snapshot") {
		t.Errorf("rollback --with-data did not say what is lost:\n%s", r.err)
	}
	mustGet(t, c, url, "notes: 2")
	_, body := get(t, c, url)
	if !strings.Contains(body, "- alpha") || !strings.Contains(body, "- beta") || strings.Contains(body, "gamma") || strings.Contains(body, "ALPHA") {
		t.Errorf("after rollback --with-data the notes are:\n%s\nwant alpha and beta as before the update, no gamma", body)
	}
	migs := db.sql(t, "SELECT name FROM django_migrations WHERE app = 'notes' ORDER BY name")
	cols := db.sql(t, db.columns)
	if migs != "0001_initial" || strings.Contains(cols, "tag") || !strings.Contains(cols, "text") {
		t.Errorf("after rollback --with-data: notes migrations %q, columns %q; want 0001_initial only and no tag", migs, cols)
	}
	if p := h.show(t, name); !strings.Contains(p.Phase, "READY") || p.LastFailedOp != "" {
		t.Errorf("after rollback: phase %s, last failure %s %s", p.Phase, p.LastFailedOp, p.LastError)
	}
}

// TestSnapshotRefusesHostileDatabase: the project's own code (its
// mod_wsgi daemon) replaces its SQLite database with a link to
// /etc/shadow: the snapshot before the next update refuses it (privd
// checks the file by descriptor without following the link, and nothing
// is copied), the change fails saying why, and the host's accounts are
// unchanged. (A FIFO there is refused the same way, by the same check:
// privd/manage's TestCheckDatabase; here it would only hang the project's
// own manage.py until its timeout.)
func TestSnapshotRefusesHostileDatabase(t *testing.T) {
	h := needHost(t)
	// In the daemon only (manage.py must make the database first): a
	// thread swaps the database for the link once data/arm appears.
	attack := `    import threading, time
    try:
        import mod_wsgi
    except ImportError:
        return
    def swap():
        data = PROJECT_ROOT / "data"
        while not (data / "arm").exists():
            time.sleep(0.1)
        if not (data / "db.sqlite3").is_symlink():
            os.symlink("/etc/shadow", str(data / "swap"))
            os.replace(str(data / "swap"), str(data / "db.sqlite3"))
    threading.Thread(target=swap, daemon=True).start()
`
	app := hostileApp(t, "snapattack", attack)
	name := h.newProject(t)
	h.deploy(t, 0, name, app)
	data := filepath.Join(h.cfg.BaseDir, "projects", name, "data")
	mustGet(t, webClient(), h.url(name, "http", "/snapattack/"), "hostile snapattack")
	// As the project's user would (its code may write data/).
	if out, err := exec.Command("runuser", "-u", projUser(name), "--", "touch", filepath.Join(data, "arm")).CombinedOutput(); err != nil {
		t.Fatalf("arm: %v %s", err, out)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		fi, err := os.Lstat(filepath.Join(data, "db.sqlite3"))
		if err == nil && fi.Mode()&os.ModeSymlink != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the attack did not swap the database: %v %v", fi, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(app, "views.py"), []byte("from django.http import HttpResponse\n\n\ndef index(request):\n    return HttpResponse(\"v2\")\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := hostState(t)
	r := h.ctl(t, 0, "", "apps", "update", name, "snapattack", app)
	if r.code == 0 || !strings.Contains(r.out+r.err, "symbolic link") {
		t.Errorf("update over a database that is a link: exit %d, want a refusal naming the link\n%s\n%s", r.code, r.out, r.err)
	}
	if entries, _ := os.ReadDir(filepath.Join(h.cfg.BaseDir, "snapshots", name)); len(entries) != 0 {
		t.Errorf("snapshots kept from a hostile database: %v", entries)
	}
	if hostState(t) != before {
		t.Error("the host's accounts changed")
	}
}

// TestFailedMigrationUndoneWithData: an update whose first migration
// changes data and whose second raises fails, and is undone with its
// data: the rows and the migration state are as before the update (not
// left half-migrated for the previous code).
func TestFailedMigrationUndoneWithData(t *testing.T) {
	h := needHost(t)
	notes := localApp(t, "notes")
	name := h.newProject(t)
	h.deploy(t, 0, name, notes)
	c := webClient()
	url := h.url(name, "http", "/notes/")
	h.sqlAsProject(t, name, "INSERT INTO notes_note (text, created) VALUES ('alpha', datetime('now')), ('beta', datetime('now'))")
	for f, src := range map[string]string{
		"0002_upper.py": notesV2Migration,
		"0003_boom.py": `from django.db import migrations


def boom(apps, schema_editor):
    raise RuntimeError("opus-e2e-migration-boom")


class Migration(migrations.Migration):
    dependencies = [("notes", "0002_upper")]
    operations = [migrations.RunPython(boom)]
`,
	} {
		if err := os.WriteFile(filepath.Join(notes, "migrations", f), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := h.ctl(t, 0, "", "apps", "update", name, "notes", notes)
	if r.code != 1 || !strings.Contains(r.err, "opus-e2e-migration-boom") {
		t.Fatalf("update with a failing migration: exit %d\n%s\n%s", r.code, r.out, r.err)
	}
	if !strings.Contains(r.out+r.err, "the database as it was before the change") {
		t.Errorf("the undo does not say it put the database back:\n%s\n%s", r.out, r.err)
	}
	mustGet(t, c, url, "notes: 2")
	_, body := get(t, c, url)
	if !strings.Contains(body, "- alpha") || !strings.Contains(body, "- beta") {
		t.Errorf("after the undo the notes are:\n%s\nwant alpha and beta as before", body)
	}
	migs := h.sqlAsProject(t, name, "SELECT name FROM django_migrations WHERE app = 'notes' ORDER BY name")
	cols := h.sqlAsProject(t, name, "SELECT name FROM pragma_table_info('notes_note')")
	if migs != "0001_initial" || strings.Contains(cols, "tag") {
		t.Errorf("after the undo: notes migrations %q, columns %q; want 0001_initial only and no tag", migs, cols)
	}
	if p := h.show(t, name); !strings.Contains(p.Phase, "READY") || p.LastFailedOp == "" {
		t.Errorf("after the undo: phase %s, last failure %q", p.Phase, p.LastFailedOp)
	}
}
