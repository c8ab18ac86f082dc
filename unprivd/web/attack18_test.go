package web

import (
	"bufio"
	"crypto/tls"
	"fmt"
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
