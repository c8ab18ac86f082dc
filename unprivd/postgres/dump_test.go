package postgres

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
)

// TestDumpRestoreLive: a project's database dumped as its own role and
// restored puts the rows back and removes a table made since (a later
// migration's); a truncated dump restores nothing and changes nothing.
// The password never travels on argv (Conn.args has none).
func TestDumpRestoreLive(t *testing.T) {
	run, portStr, _ := liveCluster(t)
	project, role, db := liveProject(t, run)
	_ = project
	password := randomHex(16)
	mustSuperSQL(t, "postgres", "CREATE ROLE "+role+" LOGIN PASSWORD '"+password+"'")
	mustSuperSQL(t, "postgres", "CREATE DATABASE "+db+" OWNER "+role)
	port, _ := strconv.Atoi(portStr)
	c := Conn{Host: "localhost", Port: port, Name: db, User: role, Password: password}
	for _, a := range c.args() {
		if strings.Contains(a, password) {
			t.Fatalf("the password is on argv: %q", a)
		}
	}
	ctx := context.Background()
	asRole := func(sql string) string {
		t.Helper()
		conn, err := connectAs(ctx, "localhost", port, role, password, db)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var out strings.Builder
		rows, err := conn.Query(ctx, sql)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		for rows.Next() {
			v, _ := rows.Values()
			for _, x := range v {
				out.WriteString(strings.TrimSpace(strings.ReplaceAll(strings.TrimSpace(toString(x)), "\n", " ")) + ";")
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return out.String()
	}
	asRole("CREATE TABLE notes (id serial primary key, text text)")
	asRole("INSERT INTO notes (text) VALUES ('alpha'), ('beta')")

	var dump bytes.Buffer
	if err := Dump(ctx, c, &dump); err != nil {
		t.Fatal(err)
	}
	asRole("UPDATE notes SET text = upper(text)")
	asRole("CREATE TABLE later (id int)")

	// A truncated dump: refused, nothing changed.
	if err := Restore(ctx, c, bytes.NewReader(dump.Bytes()[:dump.Len()/2])); err == nil {
		t.Error("a truncated dump restored")
	}
	if got := asRole("SELECT text FROM notes ORDER BY id"); got != "ALPHA;BETA;" {
		t.Errorf("after a failed restore: %q, want the data unchanged", got)
	}

	if err := Restore(ctx, c, bytes.NewReader(dump.Bytes())); err != nil {
		t.Fatal(err)
	}
	if got := asRole("SELECT text FROM notes ORDER BY id"); got != "alpha;beta;" {
		t.Errorf("after the restore: %q", got)
	}
	if got := asRole("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'later'"); got != "0;" {
		t.Errorf("a table made after the dump survived the restore: %q", got)
	}
	// The serial goes on from where the dump left it.
	asRole("INSERT INTO notes (text) VALUES ('gamma')")
	if got := asRole("SELECT id FROM notes WHERE text = 'gamma'"); got != "3;" {
		t.Errorf("sequence after restore: %q", got)
	}
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case int32:
		return strconv.FormatInt(int64(x), 10)
	}
	return ""
}
