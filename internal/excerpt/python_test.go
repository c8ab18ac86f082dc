package excerpt

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// The testdata files are real output of Debian 12's /usr/bin/python3 and
// Django 3.2 (manage.py run directly, or through privd's driver).
func TestPython(t *testing.T) {
	for _, tc := range []struct {
		file      string
		exception string   // want Exception
		context   []string // lines Context must hold, in this order
		notInCtx  []string // lines it must not hold
	}{
		{
			file:      "missing.txt", // INSTALLED_APPS names a module that does not exist
			exception: "ModuleNotFoundError: No module named 'notanapp'",
			context: []string{
				"Traceback (most recent call last; 4 lines above left out):",
				`  File "/usr/lib/python3/dist-packages/django/apps/config.py", line 224, in create`,
				"    import_module(entry)",
				"    return _bootstrap._gcd_import(name[level:], package, level)",
			},
			notInCtx: []string{`<frozen importlib._bootstrap>`, "ModuleNotFoundError"},
		},
		{
			file:      "models.txt", // an app's models import a module not installed, through the driver
			exception: "ModuleNotFoundError: No module named 'opus_not_installed'",
			context: []string{
				`  File "/usr/lib/python3/dist-packages/django/apps/registry.py", line 114, in populate`,
				`  File "/tmp/e17/proj/polls/models.py", line 3, in <module>`,
				"    import opus_not_installed  # noqa",
			},
			notInCtx: []string{"^^^", "<frozen"},
		},
		{
			file:      "migration.txt", // a migration's RunPython raises, message on two lines
			exception: "ValueError: the data cannot be converted:\nrow 3 has no text",
			context: []string{
				`  File "/tmp/e17/proj/polls/migrations/0002_boom.py", line 3, in boom`,
				`    raise ValueError("the data cannot be converted:\nrow 3 has no text")`,
			},
			notInCtx: []string{"Applying auth.0001_initial", "ValueError: the data"},
		},
		{
			file:      "chained.txt", // AppConfig.ready raises from an ImportError, through the driver
			exception: "RuntimeError: polls needs the notinstalled package",
			context: []string{
				`  File "/tmp/e17/proj/polls/apps.py", line 9, in ready`,
				`    raise RuntimeError("polls needs the notinstalled package") from e`,
			},
			notInCtx: []string{"The above exception", "RuntimeError: polls"},
		},
		{
			file:      "syntax.txt", // a SyntaxError in an app's urls.py
			exception: "SyntaxError: '(' was never closed",
			context: []string{
				`  File "/tmp/e17/proj/polls/urls.py", line 3`,
				`    path("", views.index,`,
				`        ^`,
			},
		},
		{
			file:      "superuser.txt", // createsuperuser's CommandError, no traceback
			exception: "CommandError: You must use --email with --noinput.",
			context:   []string{"Run 'python manage.py migrate' to apply them."},
		},
		{
			file:      "operational.txt", // by hand: an exception named with its module, no traceback
			exception: "django.db.utils.OperationalError: no such table: polls_question",
			context:   []string{"  Applying polls.0001_initial..."},
		},
		{
			file:      "superuser2.txt",
			exception: "CommandError: Username cannot be blank.",
		},
		{
			file: "systemcheck.txt", // check's SystemCheckError: the issues follow the line
			exception: "SystemCheckError: System check identified some issues:\n\nERRORS:\n" +
				"polls.Bad.q: (fields.E300) Field defines a relation with model 'Nope', which is either not installed, or is abstract.\n" +
				"polls.Bad.q: (fields.E307) The field polls.Bad.q was declared with a lazy reference to 'polls.nope', but app 'polls' doesn't provide model 'nope'.\n\n" +
				"System check identified 2 issues (0 silenced).",
		},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got := Python(string(data))
			if got.Exception != tc.exception {
				t.Errorf("Exception = %q\nwant %q", got.Exception, tc.exception)
			}
			rest := got.Context
			for _, l := range tc.context {
				i := strings.Index(rest, l)
				if i < 0 {
					t.Errorf("Context lacks %q (in order):\n%s", l, got.Context)
					continue
				}
				rest = rest[i+len(l):]
			}
			for _, s := range tc.notInCtx {
				if strings.Contains(got.Context, s) {
					t.Errorf("Context holds %q:\n%s", s, got.Context)
				}
			}
			// A cut traceback starts at a frame's "File" line.
			if head, rest, ok := strings.Cut(got.Context, "\n"); ok && strings.HasPrefix(head, "Traceback") && !strings.HasPrefix(rest, "  File ") {
				t.Errorf("the traceback starts inside a frame:\n%s", got.Context)
			}
			if s := got.String(); !strings.HasPrefix(s, tc.exception+"\n") && s != tc.exception {
				t.Errorf("String() does not start with the exception:\n%s", s)
			}
			if n := strings.Count(got.String(), strings.Split(tc.exception, "\n")[0]); n != 1 {
				t.Errorf("the exception line is in String() %d times", n)
			}
		})
	}
}

func TestPythonWithoutException(t *testing.T) {
	var in []string
	for i := range 20 {
		in = append(in, "line "+string(rune('a'+i)))
	}
	in = append(in, "", "opus-privd: migrate stopped: context deadline exceeded", "")
	got := Python(strings.Join(in, "\n"))
	if got.Exception != "" {
		t.Errorf("Exception = %q, want none", got.Exception)
	}
	lines := strings.Split(got.Context, "\n")
	if len(lines) != PythonContextLines || lines[len(lines)-1] != "opus-privd: migrate stopped: context deadline exceeded" || lines[0] != "line j" {
		t.Errorf("Context = %q, want the last %d non-empty lines", got.Context, PythonContextLines)
	}
}

func TestPythonTracebackCutAtTheStart(t *testing.T) {
	// privd keeps the output's tail: a long traceback may lose its header.
	data, err := os.ReadFile(filepath.Join("testdata", "missing.txt"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	got := Python(s[strings.Index(s, "execute_from"):])
	if got.Exception != "ModuleNotFoundError: No module named 'notanapp'" {
		t.Errorf("Exception = %q", got.Exception)
	}
}

func FuzzPython(f *testing.F) {
	for _, name := range []string{"models.txt", "missing.txt", "migration.txt", "chained.txt", "syntax.txt", "superuser.txt", "systemcheck.txt"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Add("Traceback (most recent call last):\nX\n")
	f.Add("Traceback (most recent call last):\n  File \"a\xff\", line 1\n\xffError: \xfe\n")
	f.Fuzz(func(t *testing.T, out string) {
		got := Python(out)
		s := got.String()
		if !utf8.ValidString(s) {
			t.Fatalf("not UTF-8: %q", s)
		}
		// Bounded whatever the input: lines of at most pythonLineMax
		// bytes (plus "..."), a bounded count of them.
		lines := strings.Split(s, "\n")
		if max := pythonMessageLines + 1 + PythonContextLines + 1; len(lines) > max {
			t.Fatalf("%d lines, want at most %d", len(lines), max)
		}
		for _, l := range lines {
			if len(l) > pythonLineMax+len("...") {
				t.Fatalf("line of %d bytes", len(l))
			}
		}
		first, _, _ := strings.Cut(got.Exception, "\n")
		for _, l := range strings.Split(got.Context, "\n") {
			if got.Exception != "" && l == first {
				t.Fatalf("exception line %q repeated in the context %q", first, got.Context)
			}
		}
	})
}
