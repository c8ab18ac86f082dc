package web

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// sse reads server-sent events from a live answer.
type sse struct {
	res *http.Response
	br  *bufio.Reader
}

// openEvents starts GET u as c and returns the answer, not read.
func openEvents(t *testing.T, c *http.Client, u string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// next returns the next event's name ("" for a message) and data, or
// fails the test after d.
func (s *sse) next(t *testing.T, d time.Duration) (string, string) {
	t.Helper()
	type ev struct{ name, data string }
	done := make(chan ev, 1)
	go func() {
		var e ev
		for {
			line, err := s.br.ReadString('\n')
			if err != nil {
				done <- ev{name: "error", data: err.Error()}
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "" && e.data != "":
				done <- e
				return
			case strings.HasPrefix(line, "event: "):
				e.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				if e.data != "" {
					e.data += "\n"
				}
				e.data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	select {
	case e := <-done:
		return e.name, e.data
	case <-time.After(d):
		t.Fatalf("no event within %v", d)
	}
	return "", ""
}

func linesOf(t *testing.T, data string) []string {
	t.Helper()
	var ev logEvent
	if err := json.Unmarshal([]byte(data), &ev); err != nil {
		t.Fatalf("event data %q: %v", data, err)
	}
	return ev.Lines
}

// TestLogEventsLive: the project page's live tail starts with the last
// lines, then relays lines written after it opened, each one cut to
// maxLogLine bytes and unable to end its event or start another; a client
// that goes away ends the follow (the user's follows are not used up).
func TestLogEventsLive(t *testing.T) {
	r, a, _ := formsRig(t)
	u := r.srv.URL + "/projects/blog/logs/events"
	res := openEvents(t, a, u)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	s := &sse{res: res, br: bufio.NewReader(res.Body)}
	name, data := s.next(t, 10*time.Second)
	if got := linesOf(t, data); name != "start" || len(got) != 1 || got[0] != "[wsgi:error] blog said hello" {
		t.Fatalf("first event %q %q, want start with the log's last line", name, data)
	}
	long := strings.Repeat("x", 3*maxLogLine)
	evil := "evil\n\nevent: failure\ndata: forged"
	r.logs.add("blog", long, evil, "<script>alert(1)</script>")
	name, data = s.next(t, 10*time.Second)
	got := linesOf(t, data)
	if name != "" || len(got) != 3 {
		t.Fatalf("event after new lines: %q %q", name, data)
	}
	if want := strings.Repeat("x", maxLogLine) + "..."; got[0] != want {
		t.Errorf("long line relayed as %d bytes, want it cut to %d", len(got[0]), maxLogLine)
	}
	if got[1] != evil || got[2] != "<script>alert(1)</script>" {
		t.Errorf("lines relayed as %q, want them as written", got[1:])
	}
	res.Body.Close()

	// One user's live tails are bounded (the API's follows per user):
	// past the bound the answer is 429 with the API's message, not a
	// stream the browser would retry.
	var open []*http.Response
	for {
		res := openEvents(t, a, u)
		if res.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(b), "following") || len(open) == 0 || len(open) > 100 {
				t.Fatalf("follow %d: %d %.300s; want 429 once the user's follows are used up", len(open)+1, res.StatusCode, b)
			}
			break
		}
		open = append(open, res)
		if len(open) > 100 {
			t.Fatal("more than 100 live tails for one user")
		}
	}
	for _, res := range open {
		res.Body.Close()
	}

	// Each follow ends with its client: more follows in a row than one
	// user may hold at once all open.
	for i := range 12 {
		deadline := time.Now().Add(5 * time.Second)
		for {
			res := openEvents(t, a, u)
			if res.StatusCode == http.StatusOK {
				s := &sse{res: res, br: bufio.NewReader(res.Body)}
				if name, _ := s.next(t, 10*time.Second); name != "start" {
					t.Fatalf("follow %d: first event %q", i, name)
				}
				res.Body.Close()
				break
			}
			res.Body.Close()
			if time.Now().After(deadline) {
				t.Fatalf("follow %d after %d closed ones: %d (earlier follows were not ended)", i, i, res.StatusCode)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestLogEventsRefused: the live tail is another user's project's for no
// one: B is answered "not found" (as for the page), and without a session
// the answer is 401, not a sign-in page; neither is an event stream.
func TestLogEventsRefused(t *testing.T) {
	r, _, _ := formsRig(t)
	r.logs.add("blog", "secret of alice")
	b, _ := r.signIn(t, uidB)
	u := r.srv.URL + "/projects/blog/logs/events"
	for _, tc := range []struct {
		name   string
		client *http.Client
		code   int
		want   string
	}{
		{"another user", b, http.StatusNotFound, `project &#34;blog&#34; not found`},
		{"no session", r.browser(), http.StatusUnauthorized, "not signed in"},
		{"unknown project", b, http.StatusNotFound, `project &#34;nope&#34; not found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := u
			if tc.name == "unknown project" {
				target = r.srv.URL + "/projects/nope/logs/events"
			}
			ans := do(t, tc.client, "GET", target, nil)
			if ans.code != tc.code || !strings.Contains(ans.body, tc.want) || strings.Contains(ans.body, "secret") ||
				ans.header.Get("Content-Type") == "text/event-stream" {
				t.Errorf("%d %q %.500s; want %d with %q", ans.code, ans.header.Get("Content-Type"), ans.body, tc.code, tc.want)
			}
		})
	}
}

// TestProjectPageHeaderAndRevisions: the status header names each app's
// running revision with its commit subject (escaped), the last change
// with its result; the revisions table offers "Roll back to this" for
// every revision but the running one, and its data snapshot where one is
// kept; the form rolls back to the revision it names, with the snapshot
// shown.
func TestProjectPageHeaderAndRevisions(t *testing.T) {
	r, a, _ := formsRig(t)
	ctx := context.Background()
	taken := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if _, err := r.st.UpdateProject(ctx, "blog", func(p *store.Project) error {
		st := p.Status.Apps["shop"]
		st.Revisions[0].Subject = "First <b>release</b>"
		st.Revisions[1].Subject = "Second release"
		p.Status.Apps["shop"] = st
		p.Snapshots = []store.Snapshot{
			{ID: "snap-old", Time: taken.Add(-time.Hour), Engine: "sqlite", Revisions: map[string]int{"shop": 1}},
			{ID: "snap-1", Time: taken, Engine: "sqlite", Revisions: map[string]int{"shop": 1}},
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pp := do(t, a, "GET", r.srv.URL+"/projects/blog", nil)
	header := regexp.MustCompile(`(?s)<section class="card status" id="status">.*?</section>`).FindString(pp.body)
	for _, want := range []string{
		`<span class="phase phase-ready">ready</span>`,
		`<a class="url" href="https://blog.opus.test:8443/">`,
		`<li id="running-shop"><a href="#app-shop">shop</a>: revision 2 · <code>222222222222</code> · <span class="subject">Second release</span>`,
		`<li id="running-polls"><a href="#app-polls">polls</a>: revision 1 · <code>sha256:0123456789ab</code></li>`,
		`>create</a>`, `by uid 61001:`, `<span class="opstate opstate-running">pending</span>`,
	} {
		if !strings.Contains(header, want) {
			t.Errorf("status header lacks %q:\n%s", want, header)
		}
	}
	table := regexp.MustCompile(`(?s)<table class="cards revisions" id="revisions-shop">.*?</table>`).FindString(pp.body)
	if !strings.Contains(table, `First &lt;b&gt;release&lt;/b&gt;`) {
		t.Errorf("revision 1's subject not shown escaped:\n%s", table)
	}
	if !regexp.MustCompile(`(?s)<tr id="revision-shop-2" class="running">.*?<strong>running</strong></td>`).MatchString(table) || strings.Contains(table, `id="rollback-shop-2"`) {
		t.Errorf("revision 2 runs: want it marked, without a rollback button:\n%s", table)
	}
	if !regexp.MustCompile(`(?s)<input type="hidden" name="to" value="1">\s*<input type="hidden" name="data_snapshot" value="snap-1">.*?id="rollback-shop-1-data"> also restore its data snapshot of 2026-01-02 03:04:05 UTC.*?<button type="submit" id="rollback-shop-1">Roll back to this</button>`).MatchString(table) {
		t.Errorf("revision 1's rollback form (with the newest snapshot of revision 1):\n%s", table)
	}
	// Polls' one revision runs: no rollback offered, no snapshot.
	if polls := regexp.MustCompile(`(?s)<table class="cards revisions" id="revisions-polls">.*?</table>`).FindString(pp.body); strings.Contains(polls, "Roll back to this") {
		t.Errorf("polls has nothing to roll back to:\n%s", polls)
	}

	csrf := csrfOf(t, pp.body)
	rb := do(t, a, "POST", r.srv.URL+"/projects/blog/apps/shop/rollback", url.Values{"csrf": {csrf}, "to": {"1"}, "with_data": {"on"}, "data_snapshot": {"snap-1"}})
	if rb.code != http.StatusSeeOther || !strings.HasPrefix(rb.location, "/ops/") {
		t.Fatalf("rollback to 1 with data: %d %q %.3000s", rb.code, rb.location, rb.body)
	}
	p, _ := r.st.GetProject(ctx, "blog")
	if a := p.Spec.App("shop"); a.Git.Ref != commit1 || a.RollbackTo != 1 || p.Spec.RestoreSnapshot != "snap-1" {
		t.Fatalf("rollback asked for %+v, restore %q; want revision 1 with snap-1", a, p.Spec.RestoreSnapshot)
	}
}

// TestRollbackToStaleSnapshotRefused: a rollback form whose snapshot is
// no longer the one the API would restore is refused, saying so at the
// top, and nothing changes.
func TestRollbackToStaleSnapshotRefused(t *testing.T) {
	r, a, csrf := formsRig(t)
	ctx := context.Background()
	if _, err := r.st.UpdateProject(ctx, "blog", func(p *store.Project) error {
		p.Snapshots = []store.Snapshot{{ID: "snap-new", Time: time.Now(), Engine: "sqlite", Revisions: map[string]int{"shop": 1}}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before, _ := r.st.GetProject(ctx, "blog")
	rb := do(t, a, "POST", r.srv.URL+"/projects/blog/apps/shop/rollback", url.Values{"csrf": {csrf}, "to": {"1"}, "with_data": {"on"}, "data_snapshot": {"snap-gone"}})
	if rb.code < 400 || !strings.Contains(messagesOf(t, rb.body), "snap-gone") {
		t.Fatalf("stale snapshot: %d %s", rb.code, messagesOf(t, rb.body))
	}
	if after, _ := r.st.GetProject(ctx, "blog"); after.Generation != before.Generation || after.Spec.RestoreSnapshot != "" {
		t.Fatalf("a refused rollback changed the project: generation %d -> %d", before.Generation, after.Generation)
	}
}

// TestListWarnsOfFailedChange: a project whose last change failed (and
// was undone) keeps its READY badge in the list, with a warning linking
// the operation; others have no warning.
func TestListWarnsOfFailedChange(t *testing.T) {
	r, a, _ := formsRig(t)
	list := func() string { return do(t, a, "GET", r.srv.URL+"/", nil).body }
	if strings.Contains(list(), "last change failed") {
		t.Fatal("warning before any change failed")
	}
	if _, err := r.st.UpdateProject(context.Background(), "blog", func(p *store.Project) error {
		p.Status.LastFailure = &store.Failure{Operation: "op-0123abcd", Error: "step migrate: boom"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`<span class="phase phase-ready">ready</span> <a class="warning" id="failed-blog" href="/ops/op-0123abcd" title="step migrate: boom">last change failed</a>`).MatchString(list()) {
		t.Fatalf("list after a failed change:\n%s", list())
	}
}

func TestOpSummary(t *testing.T) {
	step := func(name string, s opusv1.StepState) *opusv1.Step { return &opusv1.Step{Name: name, State: s} }
	done, failed, running := opusv1.StepState_STEP_STATE_DONE, opusv1.StepState_STEP_STATE_FAILED, opusv1.StepState_STEP_STATE_RUNNING
	for _, tc := range []struct {
		steps []*opusv1.Step
		want  string
	}{
		{nil, ""},
		{[]*opusv1.Step{step("user", done)}, "1 step"},
		{[]*opusv1.Step{step("user", done), step("sources", done), step("migrate", done)}, "3 steps"},
		{[]*opusv1.Step{step("user", done), step("migrate", failed), step("restore", done)}, "failed at migrate (step 2 of 3)"},
		{[]*opusv1.Step{step("user", done), step("sources", running)}, "at sources (step 2)"},
	} {
		if got := opSummary(&opusv1.Operation{Steps: tc.steps}); got != tc.want {
			t.Errorf("opSummary(%v) = %q, want %q", tc.steps, got, tc.want)
		}
	}
}

func TestFirstLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"step migrate: boom", "step migrate: boom"},
		{"\n  \nRuntimeError: x\nTraceback (most recent call last):\n  File", "RuntimeError: x"},
		{strings.Repeat("y", 1000), strings.Repeat("y", maxFirstLine) + "..."},
	} {
		if got := firstLine(tc.in); got != tc.want {
			t.Errorf("firstLine(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestSnapshotFor: the page offers the snapshot the API names for a
// revision (the API applies the rule), and none when it names none or
// one the project no longer lists.
func TestSnapshotFor(t *testing.T) {
	p := &opusv1.Project{DataSnapshots: []*opusv1.DataSnapshot{{Id: "a"}, {Id: "b"}}}
	for _, tc := range []struct{ named, want string }{{"b", "b"}, {"a", "a"}, {"", ""}, {"gone", ""}} {
		if got := snapshotFor(p, &opusv1.Revision{DataSnapshot: tc.named}).GetId(); got != tc.want {
			t.Errorf("snapshotFor(revision naming %q) = %q, want %q", tc.named, got, tc.want)
		}
	}
}
