package web

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"html"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/opus-hosting/opus/internal/pack/packtest"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestSlowBodyTimesOut: a request whose body never comes (slowloris)
// does not hold its connection, and the goroutine serving it, for good:
// the console answers or hangs up within formReadTimeout. opusd's server
// bounds only the headers (ReadHeaderTimeout), and the sign-in form is
// open to anyone who reaches the console's port.
func TestSlowBodyTimesOut(t *testing.T) {
	r, a, csrf := formsRig(t)
	old := formReadTimeout
	t.Cleanup(func() { formReadTimeout = old })
	formReadTimeout = 300 * time.Millisecond
	u, _ := url.Parse(r.srv.URL)
	var cookies []string
	for _, c := range a.Jar.Cookies(u) {
		cookies = append(cookies, c.Name+"="+c.Value)
	}
	session := "Cookie: " + strings.Join(cookies, "; ") + "\r\n"
	boundary := "b0undary"
	// Part of the CSRF part: the console reads it before the form takes
	// one of the upload slots (whose own, longer, bound is uploadTimeout).
	multipart := fmt.Sprintf("--%s\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n%s", boundary, csrf[:10])
	for _, tc := range []struct {
		name, method, path, headers, body string
	}{
		{"sign-in form, not signed in", "POST", "/login", "Content-Type: application/x-www-form-urlencoded\r\n", "user=ali"},
		{"any form, not signed in", "POST", "/logout", "Content-Type: application/x-www-form-urlencoded\r\n", "csrf="},
		{"a page with a body", "GET", "/login", "", "x"},
		{"a form, signed in", "POST", "/projects/blog/settings", session + "Content-Type: application/x-www-form-urlencoded\r\n", "csrf=" + csrf + "&debug="},
		{"a form not urlencoded, signed in", "POST", "/projects/blog/settings", session + "Content-Type: text/plain\r\n", "csrf=" + csrf + "&debug="},
		{"sign-in form not urlencoded", "POST", "/login", "Content-Type: text/plain\r\n", "user=ali"},
		{"an upload form's token", "POST", "/projects/blog/apps/upload", session + "Content-Type: multipart/form-data; boundary=" + boundary + "\r\n", multipart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// Announced, never all sent.
			fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\n\r\n%s", tc.method, tc.path, u.Host, tc.headers, len(tc.body)+1000, tc.body)
			start := time.Now()
			conn.SetReadDeadline(start.Add(5 * time.Second))
			br := bufio.NewReader(conn)
			// Whatever the console answers first (a refusal, a page), the
			// connection must then end: nothing more is coming from us.
			for {
				res, err := http.ReadResponse(br, nil)
				if err != nil {
					if time.Since(start) > 4*time.Second {
						t.Fatalf("the connection is still held after %v: %v", time.Since(start).Round(time.Millisecond), err)
					}
					return
				}
				res.Body.Close()
			}
		})
	}
}

// TestOneUserCannotTakeEveryUploadSlot: a user who sends slowly (or
// never finishes) holds at most uploadsPerUser of the console's upload
// slots, so another user's upload still goes through; the same user's
// next upload is told to wait for their own.
func TestOneUserCannotTakeEveryUploadSlot(t *testing.T) {
	r, a, csrf := formsRig(t)
	_, tgz := packed(t, pollsFiles)
	// A refused form is answered once its body was read, or its time to
	// send it is up.
	old := formReadTimeout
	t.Cleanup(func() { formReadTimeout = old })
	formReadTimeout = 300 * time.Millisecond
	// A starts uploadsAtOnce uploads whose archive never ends.
	var pipes []*io.PipeWriter
	answers := make(chan answer, uploadsAtOnce)
	for range uploadsAtOnce {
		pr, pw := io.Pipe()
		pipes = append(pipes, pw)
		mw := multipart.NewWriter(pw)
		req, _ := http.NewRequest("POST", r.srv.URL+"/projects/blog/apps/upload", pr)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		go func() {
			res, err := a.Do(req)
			if err != nil {
				answers <- answer{code: -1, body: err.Error()}
				return
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			answers <- answer{code: res.StatusCode, body: string(b)}
		}()
		go func() {
			f, _ := mw.CreateFormField("csrf")
			io.WriteString(f, csrf)
			f, _ = mw.CreateFormFile(archiveField, "slow.tar.gz")
			f.Write(tgz[:100]) // and never the rest
		}()
	}
	t.Cleanup(func() {
		for _, pw := range pipes {
			pw.CloseWithError(errors.New("test over"))
		}
	})
	// Each of A's forms either holds a slot or was answered.
	var refused []answer
	deadline := time.Now().Add(5 * time.Second)
	for len(r.console.uploadSlots)+len(refused) < uploadsAtOnce {
		select {
		case ans := <-answers:
			refused = append(refused, ans)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5 s, %d slots held and %d of A's forms answered", len(r.console.uploadSlots), len(refused))
		}
	}
	if held := len(r.console.uploadSlots); held > uploadsPerUser {
		t.Errorf("one user holds %d of the %d upload slots, want at most %d", held, uploadsAtOnce, uploadsPerUser)
	}
	for _, ans := range refused {
		if ans.code != http.StatusServiceUnavailable || !strings.Contains(ans.body, "wait until it has ended") {
			t.Errorf("A's upload past their share: %d %.2000s", ans.code, ans.body)
		}
	}
	// B's upload goes through while A's are stuck.
	b, _ := r.signIn(t, uidB)
	csrfB := csrfOf(t, do(t, b, "GET", r.srv.URL+"/new", nil).body)
	ans := postForm(t, b, r.srv.URL+"/new/upload", false, field("csrf", csrfB), field("name", "news"), archiveFile("polls.tar.gz", tgz))
	if ans.code != http.StatusSeeOther {
		t.Fatalf("B's upload while A's are stuck: %d %.3000s", ans.code, ans.body)
	}
}

// rawUpload posts an upload form whose file parts carry the given
// Content-Disposition headers as they come (a browser's, or anyone's):
// the CSRF token, then the text fields, then the files.
func rawUpload(t *testing.T, c *http.Client, u, csrf string, fields url.Values, files []rawFile) answer {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	w, _ := mw.CreateFormField("csrf")
	io.WriteString(w, csrf)
	for k, vs := range fields {
		for _, v := range vs {
			w, _ := mw.CreateFormField(k)
			io.WriteString(w, v)
		}
	}
	for _, f := range files {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", f.disposition)
		h.Set("Content-Type", "application/octet-stream")
		pw, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		pw.Write(f.body)
	}
	mw.Close()
	req, _ := http.NewRequest("POST", u, &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return answer{code: res.StatusCode, body: string(b), location: res.Header.Get("Location")}
}

type rawFile struct {
	disposition string
	body        []byte
}

// TestUploadOriginIsPrintable: the name a browser (or anyone posting the
// form) gives a file is the uploader's text: it names where an upload
// came from on the project page, in opusctl and to admins, so it is
// recorded as one line of printable text, as a commit subject is. A
// terminal escape or a bidirectional override becomes "?", and a name
// that is not UTF-8 is refused or recorded cleanly, never a failure of
// the console.
func TestUploadOriginIsPrintable(t *testing.T) {
	_, tgz := packed(t, pollsFiles)
	typed := url.Values{"app": {"news"}}
	for _, tc := range []struct {
		name   string
		fields url.Values
		files  []rawFile
		code   int
		origin string // recorded, when code is 303
		want   string // the refusal, otherwise
	}{
		{"escape and bidi override (RFC 2231 name)", typed,
			[]rawFile{{`form-data; name="archive"; filename*=UTF-8''%1B%5B31mevil%E2%80%AEzg.rat.tar.gz`, tgz}},
			http.StatusSeeOther, "?[31mevil?zg.rat.tar.gz (from the web console)", ""},
		{"archive name not UTF-8", typed,
			[]rawFile{{"form-data; name=\"archive\"; filename=\"bad\xff\xfe.tar.gz\"", tgz}},
			http.StatusSeeOther, "bad??.tar.gz (from the web console)", ""},
		{"folder name not UTF-8", typed,
			[]rawFile{{"form-data; name=\"folder\"; filename=\"n\xffews/__init__.py\"", nil}, {"form-data; name=\"folder\"; filename=\"n\xffews/models.py\"", nil}},
			http.StatusSeeOther, "n?ews/ (a folder, from the web console)", ""},
		{"folder name not UTF-8, app named by it", nil,
			[]rawFile{{"form-data; name=\"folder\"; filename=\"n\xffews/__init__.py\"", nil}},
			http.StatusUnprocessableEntity, "", `app name "n?ews"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, a, csrf := formsRig(t)
			ans := rawUpload(t, a, r.srv.URL+"/projects/blog/apps/upload", csrf, tc.fields, tc.files)
			if ans.code != tc.code {
				t.Fatalf("%d, want %d: %.3000s", ans.code, tc.code, ans.body)
			}
			p, err := r.st.GetProject(context.Background(), "blog")
			if err != nil {
				t.Fatal(err)
			}
			var news *store.AppSpec
			for i, a := range p.Spec.Apps {
				if a.Name == "news" {
					news = &p.Spec.Apps[i]
				}
			}
			if tc.code != http.StatusSeeOther {
				if top := html.UnescapeString(messagesOf(t, ans.body)); !strings.Contains(top, tc.want) {
					t.Errorf("refusal %q, want %q", top, tc.want)
				}
				if news != nil || len(p.Spec.Apps) != 2 {
					t.Errorf("refused, yet the project has apps %v", p.Spec.Apps)
				}
				return
			}
			if news == nil || news.Upload == nil {
				t.Fatalf("no uploaded app news: %+v", p.Spec.Apps)
			}
			if news.Upload.Origin != tc.origin {
				t.Errorf("origin %q, want %q", news.Upload.Origin, tc.origin)
			}
			page := do(t, a, "GET", r.srv.URL+"/projects/blog", nil)
			if page.code != http.StatusOK || strings.ContainsAny(page.body, "\x1b\u202e\ufffd") || !utf8.ValidString(page.body) {
				t.Errorf("the project page shows the name as sent: %d", page.code)
			}
		})
	}
	// The API records an origin as the console does, whoever sends it
	// (opusctl sends the directory's path).
	r, _, _ := formsRig(t)
	ctx := context.Background()
	digest, tgz := packed(t, pollsFiles)
	if _, _, err := r.uploads.Put(ctx, uidA, bytes.NewReader(tgz)); err != nil {
		t.Fatal(err)
	}
	src := &opusv1.AppSource{Kind: &opusv1.AppSource_Upload{Upload: &opusv1.UploadedSource{Digest: digest, Origin: "/home/al\x1b]0;owned\aice/\u202egnp.py\nnext line"}}}
	if _, err := r.as(t, uidA).AddApp(ctx, &opusv1.AddAppRequest{Project: "blog", App: &opusv1.AppSpec{Name: "news", Source: src}}); err != nil {
		t.Fatal(err)
	}
	p, _ := r.st.GetProject(ctx, "blog")
	if got, want := p.Spec.Apps[len(p.Spec.Apps)-1].Upload.Origin, "/home/al?]0;owned?ice/?gnp.py next line"; got != want {
		t.Errorf("API origin recorded as %q, want %q", got, want)
	}
}

// fakeStream answers its messages, then fails with err.
type fakeStream struct {
	msgs []string
	err  error
}

func (s *fakeStream) Recv() (string, error) {
	if len(s.msgs) == 0 {
		return "", s.err
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}

// TestEventFailureIsOneEvent: an API error that ends an event stream is
// relayed as the one "failure" event whatever its message holds: a
// carriage return ends a line in server-sent events as a newline does,
// so neither may reach the stream as itself (a message can quote a log
// path, a name or privd's words).
func TestEventFailureIsOneEvent(t *testing.T) {
	r := newRig(t)
	for _, msg := range []string{
		"logs: broken\r\rdata: injected\r\revent: start\rdata: {\"lines\":[\"forged\"]}",
		"logs: broken\r\n\r\nevent: start\ndata: x",
		"logs: broken\u2028\u0085data: y",
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/projects/blog/logs/events", nil)
		stream := &fakeStream{msgs: []string{`{"lines":[]}`}, err: status.Error(codes.Unavailable, msg)}
		relayEvents(r.console, rec, req, stream, nil, "start", func(m string) ([]byte, error) { return []byte(m), nil })
		// Split as an EventSource does: CR, LF and CRLF each end a line.
		lines := regexp.MustCompile(`\r\n|\r|\n`).Split(rec.Body.String(), -1)
		var events []string
		var fields []string
		for _, l := range lines {
			if l == "" {
				if len(fields) > 0 {
					events = append(events, strings.Join(fields, "|"))
				}
				fields = nil
				continue
			}
			fields = append(fields, l)
		}
		if len(events) != 2 || !strings.HasPrefix(events[1], "event: failure|data: logs: broken") || strings.Count(events[1], "|") != 1 {
			t.Errorf("message %q relayed as events %q, want the start event and one failure", msg, events)
		}
	}
}

// TestForgedFormsOnAnotherUsersProject: every form of the project page,
// sent by another signed-in user with their own valid token, is "not
// found" exactly as for a project that does not exist (nothing says the
// name is taken), and changes nothing: not the project, and no upload is
// stored for anyone (the upload forms look the project up before they
// read a file).
func TestForgedFormsOnAnotherUsersProject(t *testing.T) {
	r, _, _ := formsRig(t)
	ctx := context.Background()
	_, tgz := packed(t, pollsFiles)
	zipped := packtest.Zip(t, packtest.ZipEntry{Name: "__init__.py"}, packtest.ZipEntry{Name: "models.py"})
	b, _ := r.signIn(t, uidB)
	csrf := csrfOf(t, do(t, b, "GET", r.srv.URL+"/", nil).body)
	before, _ := r.st.GetProject(ctx, "blog")
	snap := "s-1"
	for _, tc := range []struct {
		name, path string
		form       url.Values
		parts      []part
	}{
		{"rollback", "/apps/shop/rollback", url.Values{"to": {"1"}}, nil},
		{"rollback with data", "/apps/shop/rollback", url.Values{"to": {"1"}, "with_data": {"on"}, "data_snapshot": {snap}}, nil},
		{"update", "/apps/shop/update", url.Values{"url": {"https://example.com/b/evil.git"}, "ref": {"main"}}, nil},
		{"add", "/apps", url.Values{"url": {"https://example.com/b/evil.git"}}, nil},
		{"settings", "/settings", url.Values{"debug": {"on"}, "env": {"X=1"}}, nil},
		{"remove", "/apps/shop/remove", url.Values{"confirm": {"shop"}, "drop_data": {"on"}}, nil},
		{"destroy", "/destroy", url.Values{"confirm": {"PROJECT"}}, nil},
		{"upload add, tar", "/apps/upload", nil, []part{field("app", "evil"), archiveFile("evil.tar.gz", tgz)}},
		{"upload add, zip", "/apps/upload", nil, []part{archiveFile("evil.zip", zipped)}},
		{"upload add, folder", "/apps/upload", nil, []part{folderFile("evil/__init__.py", ""), folderFile("evil/models.py", "x")}},
		{"upload update", "/apps/polls/upload", nil, []part{archiveFile("polls.tar.gz", tgz)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]answer
			for i, project := range []string{"blog", "nosuch"} {
				u := r.srv.URL + "/projects/" + project + tc.path
				if tc.form != nil {
					f := url.Values{"csrf": {csrf}}
					for k, v := range tc.form {
						f[k] = []string{strings.ReplaceAll(v[0], "PROJECT", project)}
					}
					got[i] = do(t, b, "POST", u, f)
				} else {
					got[i] = postForm(t, b, u, false, append([]part{field("csrf", csrf)}, tc.parts...)...)
				}
			}
			if got[0].code != http.StatusNotFound || !strings.Contains(got[0].body, `project &#34;blog&#34; not found`) {
				t.Fatalf("B's form on A's project: %d %.3000s", got[0].code, got[0].body)
			}
			if other := strings.ReplaceAll(got[1].body, "nosuch", "blog"); got[1].code != got[0].code || other != got[0].body {
				t.Errorf("A's project answers otherwise than one that does not exist: %d vs %d", got[0].code, got[1].code)
			}
			after, _ := r.st.GetProject(ctx, "blog")
			if after.Generation != before.Generation || after.Deleting || len(after.Spec.Apps) != len(before.Spec.Apps) {
				t.Errorf("A's project changed: generation %d → %d", before.Generation, after.Generation)
			}
			for _, uid := range []uint32{uidA, uidB} {
				if n, _ := r.uploads.Usage(uid); n != 0 {
					t.Errorf("uid %d keeps %d bytes of uploads after B's refused form", uid, n)
				}
			}
		})
	}
}
