package e2e

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// TestSuperuserEmailRefusedUpFront: README's first example used to pass
// opusctl without --superuser-email and fail at createsuperuser, after the
// user, tree and migrations were made (Django's createsuperuser --noinput
// refuses an empty e-mail, and an address such as admin@b). Both are now
// refused before anything is made, by opusctl and by opusd itself, and
// the corrected command then deploys with a working superuser. Its app
// comes from a directory named hello.git, which must give the app hello.
func TestSuperuserEmailRefusedUpFront(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	// The app's directory is named hello.git, which names the app hello
	// (it gave "hello.git", which opusd refuses as an app name).
	app := localApp(t, "hello") + ".git"
	if err := os.Rename(strings.TrimSuffix(app, ".git"), app); err != nil {
		t.Fatal(err)
	}
	before := hostState(t)
	nothingMade := func(what string) {
		t.Helper()
		if r := h.ctl(t, 0, "", "show", name); r.code == 0 {
			t.Errorf("%s: the refused project was recorded:\n%s", what, r.out)
		}
		if _, err := user.Lookup(projUser(name)); err == nil || exists(filepath.Join(h.cfg.BaseDir, "projects", name)) {
			t.Errorf("%s: the refused project got a user or a tree", what)
		}
		if hostState(t) != before {
			t.Errorf("%s: the host's accounts changed", what)
		}
	}

	for _, tc := range []struct {
		what string
		args []string
		want string
	}{
		{"no e-mail (README's example as it was)", nil, "needs an e-mail address"},
		{"an e-mail Django refuses", []string{"--superuser-email", "admin@b"}, "not an e-mail address Django accepts"},
	} {
		args := append([]string{"create", name, "--app", app, "--admin", "--superuser", "admin", "--superuser-password-stdin"}, tc.args...)
		r := h.ctl(t, 0, adminPassword+"\n", args...)
		if r.code != 2 || !strings.Contains(r.err, "--superuser-email") || !strings.Contains(r.err, tc.want) {
			t.Errorf("%s: exit %d, %q; want exit 2 naming --superuser-email and saying %q", tc.what, r.code, r.err, tc.want)
		}
		nothingMade(tc.what)
	}

	// opusd refuses on its own too (a client other than opusctl).
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := h.rootClient(t)
	defer c.Close()
	for _, email := range []string{"", "admin@b"} {
		_, err := c.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: name, Admin: true,
			Apps:      []*opusv1.AppSpec{{Name: "hello", Source: client.GitSource("https://example.com/me/hello.git", "")}},
			Superuser: &opusv1.Superuser{Username: "admin", Email: email, Password: adminPassword}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "e-mail") {
			t.Errorf("CreateProject with superuser e-mail %q: %v; want InvalidArgument about the e-mail", email, err)
		}
		nothingMade("API, e-mail " + email)
	}

	// The corrected command (README's example now) deploys, the app named
	// after its directory without .git, and the superuser signs in.
	h.deploy(t, 0, name, app)
	mustGet(t, webClient(), h.url(name, "https", "/hello/"), "Hello from Opus")
	adminLogin(t, webClient(), h.url(name, "https", ""), "admin", adminPassword)
}
