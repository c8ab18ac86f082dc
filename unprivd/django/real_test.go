package django

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const python = "/usr/bin/python3"

// capped keeps at most the first max bytes written to it.
type capped struct {
	buf bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func runPy(t *testing.T, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" + dir, "OPUS_TEST_KEY=" + os.Getenv("OPUS_TEST_KEY")}
	out := &capped{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s", python, args, err, out.buf.String())
	}
	return out.buf.String()
}

// TestRealDjango renders a project with two apps and drives it with the
// system's Django: check, migrate, collectstatic and test-client requests.
func TestRealDjango(t *testing.T) {
	if err := exec.Command(python, "-c", "import django").Run(); err != nil {
		t.Skipf("needs Django for %s (apt-get install python3-django): %v", python, err)
	}
	root := t.TempDir()
	code := filepath.Join(root, "code")
	for _, d := range []string{code, filepath.Join(root, "data")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	apps := map[string]string{
		"hello/__init__.py":            "",
		"hello/views.py":               "from django.http import HttpResponse\n\n\ndef index(request):\n    return HttpResponse('hello from the opus test app')\n",
		"hello/urls.py":                "from django.urls import path\n\nfrom . import views\n\nurlpatterns = [path('', views.index)]\n",
		"notes/__init__.py":            "",
		"notes/models.py":              "from django.db import models\n\n\nclass Note(models.Model):\n    text = models.CharField(max_length=100)\n",
		"notes/migrations/__init__.py": "",
		"notes/migrations/0001_initial.py": `from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Note",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("text", models.CharField(max_length=100)),
            ],
        ),
    ]
`,
	}
	for name, body := range apps {
		p := filepath.Join(code, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{
		Project:      "treal",
		AllowedHosts: []string{"treal.opus.localhost", "testserver"},
		Origins:      []string{"http://treal.opus.localhost:8080", "https://treal.opus.localhost:8443"},
		Apps:         []App{{Name: "hello", URLs: true}, {Name: "notes"}},
		Admin:        true,
		Env:          map[string]string{"OPUS_TEST_MARK": "marked"},
	}
	if _, err := Render(code, cfg); err != nil {
		t.Fatal(err)
	}
	key, err := NewSecretKey()
	if err != nil {
		t.Fatal(err)
	}
	secrets, err := SecretsJSON(Secrets{SecretKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "secrets"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "secrets", SecretsFile), secrets, 0o640); err != nil {
		t.Fatal(err)
	}

	if out := runPy(t, code, "manage.py", "check"); !strings.Contains(out, "no issues") {
		t.Errorf("check: %s", out)
	}
	runPy(t, code, "manage.py", "migrate", "--noinput")
	if _, err := os.Stat(filepath.Join(root, "data", "db.sqlite3")); err != nil {
		t.Errorf("sqlite database not in data/: %v", err)
	}
	runPy(t, code, "manage.py", "collectstatic", "--noinput")
	if _, err := os.Stat(filepath.Join(root, "static", "admin", "css", "base.css")); err != nil {
		t.Errorf("admin static files not collected into static/: %v", err)
	}
	script := `
import os
from django.test import Client
from django.conf import settings
from notes.models import Note
c = Client()
r = c.get("/hello/")
print("HELLO", r.status_code, r.content.decode())
r = c.get("/admin/login/")
print("ADMIN", r.status_code)
r = c.get("/")
print("INDEX", r.status_code, r.content.decode())
Note.objects.create(text="n1")
print("NOTES", Note.objects.count())
print("ENV", os.environ.get("OPUS_TEST_MARK"))
print("SECRET", settings.SECRET_KEY == os.environ["OPUS_TEST_KEY"])
print("CSRF", settings.CSRF_TRUSTED_ORIGINS)
`
	t.Setenv("OPUS_TEST_KEY", key)
	out := runPy(t, code, "manage.py", "shell", "-c", script)
	for _, want := range []string{
		"HELLO 200 hello from the opus test app",
		"ADMIN 200",
		"INDEX 200",
		`<a href="/hello/">hello</a>`,
		"NOTES 1",
		"ENV marked",
		"SECRET True",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The WSGI script loads on its own, as mod_wsgi would load it.
	wsgiOut := runPy(t, "/", "-c", "import runpy; m = runpy.run_path('"+filepath.Join(code, "wsgi.py")+"'); print('WSGI', callable(m['application']))")
	if !strings.Contains(wsgiOut, "WSGI True") {
		t.Errorf("wsgi.py: %s", wsgiOut)
	}
}
