package web

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
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
