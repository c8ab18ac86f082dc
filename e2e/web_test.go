package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// client returns an HTTP client that sends every host name to loopback, as
// *.localhost resolves, and trusts any certificate (the tests check the
// certificate themselves where it matters).
func webClient() *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
		},
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		DisableKeepAlives: true,
	}
	jar, _ := cookiejar.New(nil)
	return &http.Client{Transport: tr, Jar: jar, Timeout: 30 * time.Second}
}

func (h *host) url(name, scheme, path string) string {
	port := h.cfg.HTTPPort
	if scheme == "https" {
		port = h.cfg.HTTPSPort
	}
	return fmt.Sprintf("%s://%s%s:%d%s", scheme, name, h.cfg.ServerSuffix, port, path)
}

// get fetches a URL and returns status and body.
func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body)
}

// mustGet asserts a 200 whose body contains want.
func mustGet(t *testing.T, c *http.Client, u, want string) {
	t.Helper()
	code, body := get(t, c, u)
	if code != 200 || !strings.Contains(body, want) {
		t.Errorf("GET %s: %d %.300q, want 200 containing %q", u, code, body, want)
	}
}

// gitApp makes a git repository holding a startapp-shaped app whose view
// answers with text, tagged v1; more versions with addVersion.
type gitApp struct {
	dir, name string
}

func newGitApp(t *testing.T, name, text string) *gitApp {
	t.Helper()
	// The repository directory is called name: opusctl names a git app
	// after the last element of its URL, and the tests request /<name>/.
	parent := filepath.Join(root, "git", strconv.FormatInt(time.Now().UnixNano(), 36))
	dir := filepath.Join(parent, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	g := &gitApp{dir: dir, name: name}
	g.git(t, "init", "-q", "-b", "main")
	g.write(t, "__init__.py", "")
	g.write(t, "urls.py", "from django.urls import path\n\nfrom . import views\n\nurlpatterns = [path(\"\", views.index)]\n")
	g.addVersion(t, "v1", text)
	return g
}

func (g *gitApp) write(t *testing.T, rel, content string) {
	t.Helper()
	p := filepath.Join(g.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (g *gitApp) git(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
	cmd.Dir = g.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// addVersion commits a view answering text and tags it.
func (g *gitApp) addVersion(t *testing.T, tag, text string) string {
	t.Helper()
	g.write(t, "views.py", fmt.Sprintf("from django.http import HttpResponse\n\n\ndef index(request):\n    return HttpResponse(%q)\n", text))
	g.git(t, "add", "-A")
	g.git(t, "commit", "-q", "-m", tag)
	g.git(t, "tag", tag)
	return g.git(t, "rev-parse", "HEAD")
}

// localApp copies one of examples/ into a fresh directory.
func localApp(t *testing.T, example string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), example)
	if out, err := exec.Command("cp", "-r", filepath.Join("..", "examples", example), dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return dst
}

var csrfField = regexp.MustCompile(`name="csrfmiddlewaretoken" value="([^"]+)"`)

// adminLogin signs in to Django's admin and reports whether the admin index
// was reached.
func adminLogin(t *testing.T, c *http.Client, base, user, password string) {
	t.Helper()
	loginURL := base + "/admin/login/?next=/admin/"
	code, body := get(t, c, loginURL)
	m := csrfField.FindStringSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("GET %s: %d, no CSRF token in %.200q", loginURL, code, body)
	}
	form := url.Values{"csrfmiddlewaretoken": {m[1]}, "username": {user}, "password": {password}, "next": {"/admin/"}}
	req, _ := http.NewRequest("POST", loginURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Referer", loginURL)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(page), "Site administration") {
		t.Fatalf("admin login as %s: %d at %s, page %.300q", user, resp.StatusCode, resp.Request.URL, page)
	}
}
