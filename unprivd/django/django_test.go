package django

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var goldenConfigs = map[string]Config{
	"sqlite": {
		Project:      "blog",
		AllowedHosts: []string{"blog.opus.localhost"},
		Origins:      []string{"http://blog.opus.localhost:8080", "https://blog.opus.localhost:8443"},
		Apps:         []App{{Name: "posts", URLs: true}, {Name: "tags"}},
		Admin:        true,
	},
	"postgresql": {
		Project:      "shop",
		AllowedHosts: []string{"shop.example.com", "www.shop.example.com"},
		Origins:      []string{"https://shop.example.com"},
		Apps:         []App{{Name: "catalog", URLs: true}},
		Debug:        true,
		Database:     Database{Engine: EnginePostgreSQL, Name: "shop", User: "shop", Host: "db.internal", Port: 5432},
		Env:          map[string]string{"SHOP_CURRENCY": "EUR", "FEATURE_X": "on"},
	},
}

func TestGolden(t *testing.T) {
	for name, cfg := range goldenConfigs {
		t.Run(name, func(t *testing.T) {
			code := t.TempDir()
			changed, err := Render(code, cfg)
			if err != nil || !changed {
				t.Fatalf("Render = %v, %v", changed, err)
			}
			got := map[string]string{}
			err = filepath.Walk(code, func(p string, fi os.FileInfo, err error) error {
				if err != nil {
					return err
				}
				rel, _ := filepath.Rel(code, p)
				if fi.IsDir() {
					if fi.Mode().Perm() != dirMode && p != code {
						t.Errorf("%s: dir mode %v", rel, fi.Mode().Perm())
					}
					return nil
				}
				if fi.Mode().Perm() != fileMode {
					t.Errorf("%s: mode %v", rel, fi.Mode().Perm())
				}
				b, err := os.ReadFile(p)
				got[rel] = string(b)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 6 {
				t.Errorf("rendered %d files: %v", len(got), reflect.ValueOf(got).MapKeys())
			}
			for rel, content := range got {
				golden := filepath.Join("testdata", name, rel+".golden")
				if *update {
					if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(golden, []byte(content), 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -update)", err)
				}
				if string(want) != content {
					t.Errorf("%s differs from %s (run go test -update and review the diff)\n%s", rel, golden, content)
				}
			}
		})
	}
}

func TestRenderChangedAndIdempotent(t *testing.T) {
	code := t.TempDir()
	cfg := goldenConfigs["sqlite"]
	if changed, err := Render(code, cfg); err != nil || !changed {
		t.Fatalf("first Render = %v, %v", changed, err)
	}
	wsgi := filepath.Join(code, "wsgi.py")
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(wsgi, old, old); err != nil {
		t.Fatal(err)
	}
	if changed, err := Render(code, cfg); err != nil || changed {
		t.Fatalf("second Render = %v, %v; want unchanged", changed, err)
	}
	cfg.Apps = append(cfg.Apps, App{Name: "extra", URLs: true})
	if changed, err := Render(code, cfg); err != nil || !changed {
		t.Fatalf("Render with a new app = %v, %v", changed, err)
	}
	// Only opus.json changed: wsgi.py (watched by mod_wsgi) is untouched.
	if fi, _ := os.Stat(wsgi); !fi.ModTime().Equal(old) {
		t.Error("wsgi.py rewritten although its content did not change")
	}
	data, _ := os.ReadFile(filepath.Join(code, "opus_project", "opus.json"))
	if !strings.Contains(string(data), `"extra"`) {
		t.Errorf("opus.json lacks the new app: %s", data)
	}
	// No temporary files are left.
	ents, _ := os.ReadDir(filepath.Join(code, "opus_project"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("leftover %s", e.Name())
		}
	}
}

func TestValidateRefuses(t *testing.T) {
	base := goldenConfigs["sqlite"]
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
		want string
	}{
		{"bad project", func(c *Config) { c.Project = "Bad" }, "project name"},
		{"bad app", func(c *Config) { c.Apps = []App{{Name: "x'); import os #"}} }, "app name"},
		{"shadowing app", func(c *Config) { c.Apps = []App{{Name: "django"}} }, "would shadow"},
		{"duplicate app", func(c *Config) { c.Apps = []App{{Name: "a"}, {Name: "a"}} }, "listed twice"},
		{"host with slash", func(c *Config) { c.AllowedHosts = []string{"a/b"} }, "not a host name"},
		{"origin without scheme", func(c *Config) { c.Origins = []string{"blog.example"} }, "must be http://"},
		{"engine", func(c *Config) { c.Database.Engine = "mysql" }, `"mysql" is not supported`},
		{"pg without name", func(c *Config) { c.Database = Database{Engine: EnginePostgreSQL} }, "needs a name"},
		{"port", func(c *Config) { c.Database.Port = 70000 }, "out of range"},
		{"env key", func(c *Config) { c.Env = map[string]string{"lower": "x"} }, "is not allowed"},
		{"env python", func(c *Config) { c.Env = map[string]string{"PYTHONPATH": "/tmp"} }, "would change how Python"},
		{"env ld", func(c *Config) { c.Env = map[string]string{"LD_PRELOAD": "/tmp/x.so"} }, "would change how Python"},
		{"env nul", func(c *Config) { c.Env = map[string]string{"A": "x\x00y"} }, "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			c.Apps = append([]App(nil), base.Apps...)
			tc.mod(&c)
			code := t.TempDir()
			changed, err := Render(code, c)
			if err == nil || !strings.Contains(err.Error(), tc.want) || changed {
				t.Fatalf("Render = %v, %v; want error %q", changed, err, tc.want)
			}
			if ents, _ := os.ReadDir(code); len(ents) != 0 {
				t.Errorf("refused Render wrote %v", ents)
			}
		})
	}
}

func TestSecrets(t *testing.T) {
	k1, err := NewSecretKey()
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := NewSecretKey()
	if len(k1) != 50 || k1 == k2 {
		t.Fatalf("keys %q %q", k1, k2)
	}
	for _, c := range k1 {
		if !strings.ContainsRune(secretKeyChars, c) {
			t.Fatalf("key has %q", c)
		}
	}
	data, err := SecretsJSON(Secrets{SecretKey: k1, DBPassword: `p"w\`})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	if err := json.Unmarshal(data, &got); err != nil || got["secret_key"] != k1 || got["db_password"] != `p"w\` || len(got) != 2 {
		t.Fatalf("secrets.json %s: %v", data, err)
	}
	back, err := ParseSecrets(data)
	if err != nil || back != (Secrets{SecretKey: k1, DBPassword: `p"w\`}) {
		t.Fatalf("ParseSecrets = %+v, %v", back, err)
	}
	if _, err := SecretsJSON(Secrets{DBPassword: "x"}); err == nil {
		t.Error("empty secret key accepted")
	}
	for _, bad := range []string{``, `null`, `[]`, `{}`, `{"secret_key": ""}`, `{"secret_key": 1}`, `{"db_password": "x"}`, "\x00"} {
		if s, err := ParseSecrets([]byte(bad)); err == nil {
			t.Errorf("ParseSecrets(%q) = %+v, want an error", bad, s)
		}
	}
}

// FuzzRender: whatever strings land in a Config, the Python files are the
// same constant bytes and opus.json is valid JSON carrying the values back.
func FuzzRender(f *testing.F) {
	f.Add("blog", "posts", "h.example", "https://h.example:8443", "KEY", "v", "db", "u", "host")
	f.Add(`x"""; import os; os.system("id") #`, "a')\n", "\x00", "'''", "\"", "\\", "\u2028", "}}{{", "%s")
	f.Fuzz(func(t *testing.T, project, app, host, origin, key, val, dbName, dbUser, dbHost string) {
		cfg := Config{
			Project: project, AllowedHosts: []string{host}, Origins: []string{origin},
			Apps: []App{{Name: app, URLs: true}}, Admin: true,
			Database: Database{Engine: EnginePostgreSQL, Name: dbName, User: dbUser, Host: dbHost, Port: 1},
			Env:      map[string]string{key: val},
		}
		got, err := files(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]string{"manage.py": managePy, "wsgi.py": wsgiPy,
			"opus_project/__init__.py": initPy, "opus_project/settings.py": settingsPy, "opus_project/urls.py": urlsPy} {
			if string(got[name]) != want {
				t.Fatalf("%s depends on the config", name)
			}
		}
		var back opusJSON
		if err := json.Unmarshal(got["opus_project/opus.json"], &back); err != nil {
			t.Fatalf("opus.json is not JSON: %v", err)
		}
		// encoding/json replaces invalid UTF-8; compare what survives it.
		valid := func(s string) string { b, _ := json.Marshal(s); var r string; json.Unmarshal(b, &r); return r }
		if back.Project != valid(project) || back.InstalledApps[0] != valid(app) || back.URLApps[0] != valid(app) ||
			back.AllowedHosts[0] != valid(host) || back.Origins[0] != valid(origin) || back.Env[valid(key)] != valid(val) ||
			back.Database.Name != valid(dbName) || back.Database.User != valid(dbUser) || back.Database.Host != valid(dbHost) {
			t.Fatalf("opus.json does not round-trip: %+v", back)
		}
		// Render either refuses or writes exactly these files.
		code := t.TempDir()
		if _, err := Render(code, cfg); err == nil {
			s, _ := os.ReadFile(filepath.Join(code, "opus_project", "settings.py"))
			if string(s) != settingsPy {
				t.Fatal("written settings.py differs")
			}
		}
	})
}

// FuzzParseSecrets: whatever a tenant left in its secrets file, taking it
// over either fails or yields a non-empty key that SecretsJSON writes back
// as the same values.
func FuzzParseSecrets(f *testing.F) {
	for _, s := range []string{`{"secret_key": "k", "db_password": "p"}`, `{}`, `null`, `{"secret_key": 1}`, "\xff", `{"secret_key": "\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSecrets(data)
		if err != nil {
			return
		}
		if s.SecretKey == "" {
			t.Fatal("an empty key was accepted")
		}
		out, err := SecretsJSON(s)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseSecrets(out)
		if err != nil || back != s {
			t.Fatalf("round trip %+v → %q → %+v, %v", s, out, back, err)
		}
	})
}
