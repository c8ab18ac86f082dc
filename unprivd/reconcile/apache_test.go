package reconcile

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/unprivd/store"
)

// TestHealthMountPoints: once "/" answers, the health check requests the
// mount point of every app with a urls.py; a 2xx, 3xx or 4xx there passes,
// a 5xx that stays fails the step naming the app's URL and status, well
// within the health timeout, and a 5xx that goes away (a daemon being
// replaced) does not.
func TestHealthMountPoints(t *testing.T) {
	steady := func(code int) func(int) int { return func(int) int { return code } }
	// then answers code for the first n requests, 200 after.
	then := func(code, n int) func(int) int {
		return func(i int) int {
			if i < n {
				return code
			}
			return http.StatusOK
		}
	}
	cases := []struct {
		name string
		// apps are the spec's apps; those in urls have a urls.py.
		apps, urls []string
		// answer gives the status of a path's i-th request (from 0); a
		// path not listed answers 200.
		answer map[string]func(int) int
		// wantErr are in the error (none: the step succeeds); wantMsg in
		// its message otherwise. notIn is in neither.
		wantErr, wantMsg []string
		notIn            string
		// asked are the paths that must have been requested, never those
		// that must not have been.
		asked, never []string
		// retried: the failing mount point was asked again over
		// healthRetryFor before the step failed.
		retried string
		// wantRoot is how many times "/" must be asked (0: not checked).
		wantRoot int
	}{
		{
			name: "200 everywhere", apps: []string{"polls", "shop"}, urls: []string{"polls", "shop"},
			wantMsg: []string{"/ answered 200", "2 app mount points answered: /polls/ 200, /shop/ 200"},
			asked:   []string{"/", "/polls/", "/shop/"},
		},
		{
			name: "404 at an app with no index view passes", apps: []string{"polls", "shop"}, urls: []string{"polls", "shop"},
			answer:  map[string]func(int) int{"/shop/": steady(http.StatusNotFound)},
			wantMsg: []string{"2 app mount points answered: /polls/ 200, /shop/ 404"},
		},
		{
			name: "a redirect to a login page passes", apps: []string{"polls"}, urls: []string{"polls"},
			answer:  map[string]func(int) int{"/polls/": steady(http.StatusFound)},
			wantMsg: []string{"1 app mount point answered: /polls/ 302"},
		},
		{
			name: "500 at one app fails naming it", apps: []string{"polls", "shop"}, urls: []string{"polls", "shop"},
			answer: map[string]func(int) int{"/polls/": steady(http.StatusInternalServerError)},
			wantErr: []string{
				"app polls: http://tproj" + testSuffix + ":8080/polls/ answered HTTP 500 Internal Server Error at each of ",
				"this app's page fails with a server error; the project's error log says why (opusctl logs tproj)",
				"last lines of the project's error log:\nInternal Server Error: /polls/\nZeroDivisionError: division by zero",
			},
			notIn:   "/shop/",
			retried: "/polls/",
		},
		{
			name: "502 at two apps fails naming both", apps: []string{"polls", "shop", "blog"}, urls: []string{"polls", "shop", "blog"},
			answer: map[string]func(int) int{"/polls/": steady(http.StatusBadGateway), "/blog/": steady(http.StatusServiceUnavailable)},
			wantErr: []string{
				"app polls: http://tproj" + testSuffix + ":8080/polls/ answered HTTP 502 Bad Gateway",
				"app blog: http://tproj" + testSuffix + ":8080/blog/ answered HTTP 503 Service Unavailable",
				"these apps' pages fail with a server error",
			},
			notIn: "/shop/",
		},
		{
			name: "transient 503 then 200 passes", apps: []string{"polls"}, urls: []string{"polls"},
			answer:  map[string]func(int) int{"/polls/": then(http.StatusServiceUnavailable, 2)},
			wantMsg: []string{"1 app mount point answered: /polls/ 200"},
		},
		{
			name: "transient 500 then 200 passes", apps: []string{"polls", "shop"}, urls: []string{"polls", "shop"},
			answer:  map[string]func(int) int{"/shop/": then(http.StatusInternalServerError, 1)},
			wantMsg: []string{"2 app mount points answered: /polls/ 200, /shop/ 200"},
		},
		{
			name: "an app without urls.py is not mounted, so not asked", apps: []string{"polls", "models_only"}, urls: []string{"polls"},
			wantMsg: []string{"1 app mount point answered: /polls/ 200"},
			never:   []string{"/models_only/"},
		},
		{
			name: "no app mounted", apps: []string{"models_only"},
			wantMsg: []string{"/ answered 200", "no app has a urls.py to mount"},
			never:   []string{"/models_only/"},
		},
		{
			name: "the mount points wait for / to answer", apps: []string{"polls"}, urls: []string{"polls"},
			answer:   map[string]func(int) int{"/": then(http.StatusServiceUnavailable, 3)},
			wantMsg:  []string{"/ answered 200", "1 app mount point answered: /polls/ 200"},
			wantRoot: 4, asked: []string{"/polls/"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			asked := map[string]int{}
			var order []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				i := asked[r.URL.Path]
				asked[r.URL.Path]++
				order = append(order, r.URL.Path)
				mu.Unlock()
				if r.Host != "tproj"+testSuffix {
					http.NotFound(w, r) // Apache's catch-all
					return
				}
				code := http.StatusOK
				if f := c.answer[r.URL.Path]; f != nil {
					code = f(i)
				}
				w.WriteHeader(code)
			}))
			defer srv.Close()
			task := healthTask(t, srv.Listener.Addr().String(), c.apps, c.urls)
			task.Privd.(*fakePrivd).logLines = []string{"Internal Server Error: /polls/", "ZeroDivisionError: division by zero"}

			start := time.Now()
			msg, err := stepHealth(context.Background(), task)
			took := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			if len(c.wantErr) > 0 {
				if err == nil {
					t.Fatalf("health passed: %q; want it to fail", msg)
				}
				for _, w := range c.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q:\n%s", w, err)
					}
				}
				t.Logf("error:\n%s", err)
				if c.notIn != "" && strings.Contains(err.Error(), c.notIn) {
					t.Errorf("error names %s, which answered 200:\n%s", c.notIn, err)
				}
				// A steady 5xx fails after healthRetryFor, not at the
				// health timeout (a minute here).
				if took < healthRetryFor || took > healthRetryFor+5*time.Second {
					t.Errorf("failed after %s; want about %s", took, healthRetryFor)
				}
			} else {
				if err != nil {
					t.Fatalf("health failed: %v", err)
				}
				for _, w := range c.wantMsg {
					if !strings.Contains(msg, w) {
						t.Errorf("message %q lacks %q", msg, w)
					}
				}
			}
			for _, p := range c.asked {
				if asked[p] == 0 {
					t.Errorf("%s was not requested (asked: %v)", p, order)
				}
			}
			for _, p := range c.never {
				if asked[p] != 0 {
					t.Errorf("%s was requested (asked: %v)", p, order)
				}
			}
			// Asked again while it might recover, but not so often that
			// its tracebacks flood the project's error log.
			if n := asked[c.retried]; c.retried != "" && (n < 3 || n > 8) {
				t.Errorf("%s asked %d times before failing; want 3 to 8", c.retried, n)
			}
			// Every request for "/" comes before the first for a mount
			// point: they wait for "/" to answer.
			if i := slices.IndexFunc(order, func(p string) bool { return p != "/" }); i >= 0 && slices.Contains(order[i:], "/") {
				t.Errorf("a mount point was requested before / answered: %v", order)
			}
			if c.wantRoot > 0 && asked["/"] != c.wantRoot {
				t.Errorf("/ asked %d times, want %d: %v", asked["/"], c.wantRoot, order)
			}
		})
	}
}

// healthTask is a Task for stepHealth alone: project tproj whose spec has
// apps, those in urls with a urls.py in its code directory, served at
// addr, with a health timeout far longer than any case should take.
func healthTask(t *testing.T, addr string, apps, urls []string) *Task {
	t.Helper()
	lay := layout.For(t.TempDir(), "tproj")
	p := &store.Project{Name: "tproj"}
	for _, a := range apps {
		p.Spec.Apps = append(p.Spec.Apps, store.AppSpec{Name: a})
		if err := os.MkdirAll(filepath.Join(lay.Code, a), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range urls {
		if err := os.WriteFile(filepath.Join(lay.Code, a, "urls.py"), []byte("urlpatterns = []\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &Task{Project: p, Layout: lay, Privd: newFake(),
		opt: &Options{ServerSuffix: testSuffix, HTTPPort: 8080, HealthAddr: addr, HealthTimeout: time.Minute}}
}

// TestHealthMountsBoundedByTimeout: mount points that never answer (a
// tenant's views that hang, one app or many) do not hold the reconcile
// worker, which other projects' runs share, past the health timeout:
// before, each was asked for up to healthRequestTimeout in turn, so N apps
// held it N × 10 s whatever the health timeout said. The step passes
// (no answer is said, not judged), naming what was not asked.
func TestHealthMountsBoundedByTimeout(t *testing.T) {
	apps := []string{"a1", "a2", "a3", "a4"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			<-r.Context().Done() // hangs until the client gives up
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	task := healthTask(t, srv.Listener.Addr().String(), apps, apps)
	task.opt.HealthTimeout = 2 * time.Second
	start := time.Now()
	msg, err := stepHealth(context.Background(), task)
	if took := time.Since(start); took > task.opt.HealthTimeout+time.Second {
		t.Errorf("health took %s with a health timeout of %s", took, task.opt.HealthTimeout)
	}
	if err != nil {
		t.Fatalf("mount points that do not answer failed the check: %v", err)
	}
	for _, w := range []string{"/a1/ gave no answer before the health check's 2s were spent", "/a4/ gave no request: the health check's 2s were spent"} {
		if !strings.Contains(msg, w) {
			t.Errorf("message lacks %q:\n%s", w, msg)
		}
	}
}

// TestHealthMountsFailingPastTimeout: a mount point that answered 5xx is
// still judged when the health time runs out while it is asked again.
func TestHealthMountsFailingPastTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.WriteHeader(http.StatusOK)
		case "/slow/":
			<-r.Context().Done()
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	task := healthTask(t, srv.Listener.Addr().String(), []string{"bad", "slow"}, []string{"bad", "slow"})
	task.opt.HealthTimeout = time.Second
	if msg, err := stepHealth(context.Background(), task); err == nil || !strings.Contains(err.Error(), "app bad:") {
		t.Fatalf("health with a 500 at /bad/: %q, %v; want it to fail naming bad", msg, err)
	}
}
