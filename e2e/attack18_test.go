package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAttack18TenantLogLinesStayText: a project's own code writes lines
// made to break the console's live log tail and project page into its
// error log, when its daemon starts (the tail's first event) and on a
// request made while the tail is open (a later event): markup closing a
// script, carriage returns and newlines followed by "event:" and "data:"
// lines of a forged event, a terminal escape and a bidirectional
// override, a line longer than Apache and the console keep. Each arrives as text: the
// stream has only the tail's own events, every event's data is the
// console's JSON, no forged line or event appears, and the page shows the
// markup escaped.
func TestAttack18TenantLogLinesStayText(t *testing.T) {
	h := needHost(t)
	var uid uint32 // root: the app is in the test's own temporary directory
	name := h.newProject(t)
	tag := fmt.Sprintf("t%08x", rand.Uint32())
	// write(when) writes the hostile lines, each ending in tag-when-kind.
	h.mustCtl(t, uid, "create", name, "--app", hostileApp(t, "tail18", fmt.Sprintf(`
    import sys
    from django.http import HttpResponse
    from . import views
    def write(when):
        t = %q + "-" + when
        sys.stderr.write("</script><script>alert(1)</script>" + t + "-html\n")
        sys.stderr.write("a\r\n\r\nevent: start\r\ndata: {\"lines\":[\"forged-" + t + "\"]}\r\n\r\n" + t + "-crlf\n")
        sys.stderr.write("b\revent: failure\rdata: forged-" + t + "\r\r" + t + "-cr\n")
        sys.stderr.write("\x1b[2J\u202e" + t + "-esc\n")
        sys.stderr.write("L" * 100000 + t + "-long\n")
        sys.stderr.flush()
    write("start")
    def index(request):
        write(request.GET.get("m", "none"))
        return HttpResponse("hostile tail18")
    views.index = index
`, tag)))
	mustGet(t, webClient(), h.url(name, "http", "/tail18/?m=load"), "hostile tail18")

	c := consoleClient()
	if a := consoleDo(t, c, "GET", h.loginLink(t, uid), nil); a.code != http.StatusSeeOther {
		t.Fatalf("sign-in link: %d", a.code)
	}
	base := "https://" + h.webAddr

	// The live tail, read for a while: its first event has the lines
	// written so far; the request made meanwhile writes more.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/projects/"+name+"/logs/events", nil)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("live tail: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	go func() {
		time.Sleep(3 * time.Second)
		get(t, webClient(), h.url(name, "http", "/tail18/?m=live"))
	}()
	stream, _ := io.ReadAll(res.Body) // until the context ends it
	// As an EventSource reads it: CR, LF and CRLF each end a line; a
	// blank line ends an event.
	type event struct{ kind, data string }
	var events []event
	cur := event{}
	for _, l := range regexp.MustCompile(`\r\n|\r|\n`).Split(string(stream), -1) {
		field, value, _ := strings.Cut(l, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "":
			if l == "" && cur != (event{}) {
				events = append(events, cur)
				cur = event{}
			}
		case "event":
			cur.kind = value
		case "data":
			cur.data += value
		case "retry":
		default:
			t.Errorf("the stream has a line the console did not write: %.200q", l)
		}
	}
	var lines []string
	for i, ev := range events {
		if (i == 0 && ev.kind != "start") || (i > 0 && ev.kind != "") {
			t.Errorf("event %d is %q, want the tail's own (start, then messages): %.300q", i, ev.kind, ev.data)
		}
		var m struct {
			Lines []string `json:"lines"`
		}
		if err := json.Unmarshal([]byte(ev.data), &m); err != nil {
			t.Errorf("event %d's data is not the console's JSON: %v: %.300q", i, err, ev.data)
		}
		lines = append(lines, m.Lines...)
	}
	for _, when := range []string{"start", "live"} {
		for _, kind := range []string{"html", "crlf", "cr", "esc"} {
			if !slicesContainsSuffix(lines, tag+"-"+when+"-"+kind) {
				t.Errorf("the tail lacks the %s line written at %s: %d lines in %d events", kind, when, len(lines), len(events))
			}
		}
	}
	long := false
	for _, l := range lines {
		long = long || strings.Contains(l, strings.Repeat("L", 1000))
		if strings.HasPrefix(l, "forged-") {
			t.Errorf("a forged line became a line of the tail: %q", l)
		}
		if len(l) > 2000+len("...") {
			t.Errorf("a line of %d bytes was relayed whole", len(l))
		}
	}
	if !long {
		t.Errorf("the tail lacks the long line (cut, by Apache and the console)")
	}
	if !slicesContainsSuffix(lines, "</script><script>alert(1)</script>"+tag+"-start-html") {
		t.Errorf("the markup line is not relayed as its text")
	}

	// The project page shows the lines as text.
	page := consoleDo(t, c, "GET", base+"/projects/"+name, nil)
	if page.code != http.StatusOK {
		t.Fatalf("project page: %d", page.code)
	}
	if strings.Contains(page.body, "<script>alert(1)") || !strings.Contains(page.body, html.EscapeString("</script><script>alert(1)</script>")+tag) {
		t.Errorf("the project page does not show the markup line escaped")
	}
}

// slicesContainsSuffix reports whether one of lines ends with suffix.
func slicesContainsSuffix(lines []string, suffix string) bool {
	for _, l := range lines {
		if strings.HasSuffix(l, suffix) {
			return true
		}
	}
	return false
}

// TestAttack18HostileUploader: on the real console, a signed-in user
// (and, for the sign-in form, anyone who reaches the port) attacks it
// with what a browser never sends. A request whose body never comes is
// hung up on (opusd bounds only headers itself); an archive whose name
// carries a terminal escape and a bidi override is recorded by a name
// of printable text, as opusctl and the page show it; another user's
// upload to this project is "not found" and stores nothing, and changes
// nothing on the host.
func TestAttack18HostileUploader(t *testing.T) {
	h := needHost(t)
	_, uid := addUser(t, "hu")
	_, other := addUser(t, "ho")
	name := h.newProject(t)
	base := "https://" + h.webAddr

	// Slowloris on the sign-in form, while the rest goes on.
	slow := make(chan error, 1)
	go func() {
		conn, err := tls.Dial("tcp", h.webAddr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			slow <- err
			return
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nuser=", h.webAddr)
		start := time.Now()
		conn.SetReadDeadline(start.Add(2 * time.Minute))
		_, err = io.Copy(io.Discard, conn)
		if err != nil || time.Since(start) > 45*time.Second {
			slow <- fmt.Errorf("a sign-in form without its body held its connection %v (%v)", time.Since(start).Round(time.Second), err)
			return
		}
		slow <- nil
	}()

	signIn := func(uid uint32) (*http.Client, string) {
		c := consoleClient()
		if a := consoleDo(t, c, "GET", h.loginLink(t, uid), nil); a.code != http.StatusSeeOther {
			t.Fatalf("sign in as %d: %d", uid, a.code)
		}
		csrf := consoleCSRF.FindStringSubmatch(consoleDo(t, c, "GET", base+"/new", nil).body)
		if csrf == nil {
			t.Fatal("no CSRF token on the create page")
		}
		return c, csrf[1]
	}
	tgz := filepath.Join(t.TempDir(), "notes.tar.gz")
	if out, err := exec.Command("tar", "czf", tgz, "-C", localApp(t, "notes"), ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	archive, err := os.ReadFile(tgz)
	if err != nil {
		t.Fatal(err)
	}
	post := func(c *http.Client, path, csrf string, fields map[string]string) consoleAnswer {
		var form bytes.Buffer
		mw := multipart.NewWriter(&form)
		mw.WriteField("csrf", csrf)
		for k, v := range fields {
			mw.WriteField(k, v)
		}
		hdr := textproto.MIMEHeader{}
		hdr.Set("Content-Disposition", `form-data; name="archive"; filename*=UTF-8''%1B%5D0%3Bowned%07%E2%80%AEzg.rat.tar.gz`)
		hdr.Set("Content-Type", "application/gzip")
		pw, _ := mw.CreatePart(hdr)
		pw.Write(archive)
		mw.Close()
		req, _ := http.NewRequest("POST", base+path, &form)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		return consoleAnswer{code: res.StatusCode, body: string(b), location: res.Header.Get("Location")}
	}

	c, csrf := signIn(uid)
	a := post(c, "/new/upload", csrf, map[string]string{"name": name, "app": "notes"})
	if a.code != http.StatusSeeOther || !strings.HasPrefix(a.location, "/ops/") {
		t.Fatalf("create from the archive: %d %.2000s", a.code, a.body)
	}
	h.mustCtl(t, uid, "wait", strings.TrimPrefix(a.location, "/ops/"))
	mustGet(t, webClient(), h.url(name, "http", "/notes/"), "notes: 0")
	const want = "?]0;owned??zg.rat.tar.gz (from the web console)"
	var shown struct {
		Apps []struct {
			Source struct {
				Upload struct {
					Origin string `json:"origin"`
				} `json:"upload"`
			} `json:"source"`
			Revisions []struct {
				Origin string `json:"origin"`
			} `json:"revisions"`
		} `json:"apps"`
	}
	if err := json.Unmarshal([]byte(h.mustCtl(t, 0, "show", name, "-o", "json")), &shown); err != nil {
		t.Fatal(err)
	}
	if len(shown.Apps) != 1 || shown.Apps[0].Source.Upload.Origin != want || len(shown.Apps[0].Revisions) != 1 || shown.Apps[0].Revisions[0].Origin != want {
		t.Errorf("recorded origins %+v, want %q", shown.Apps, want)
	}
	for _, args := range [][]string{{"show", name}, {"apps", "revisions", name, "notes"}} {
		if out := h.mustCtl(t, 0, args...); !strings.Contains(out, want) {
			t.Errorf("opusctl %s does not show the origin as %q:\n%s", strings.Join(args, " "), want, out)
		}
	}
	if page := consoleDo(t, c, "GET", base+"/projects/"+name, nil); page.code != http.StatusOK || strings.ContainsAny(page.body, "\x1b\x07\u202e") {
		t.Errorf("the project page shows the name as sent: %d", page.code)
	}

	// Another user's forged upload to this project.
	before := hostState(t)
	shownBefore := h.mustCtl(t, 0, "show", name, "-o", "json")
	oc, ocsrf := signIn(other)
	if a := post(oc, "/projects/"+name+"/apps/upload", ocsrf, map[string]string{"app": "evil"}); a.code != http.StatusNotFound || !strings.Contains(a.body, "not found") {
		t.Errorf("another user's upload to the project: %d %.2000s", a.code, a.body)
	}
	if a := post(oc, "/projects/"+name+"/apps/notes/upload", ocsrf, nil); a.code != http.StatusNotFound {
		t.Errorf("another user's update of the app: %d %.2000s", a.code, a.body)
	}
	if entries, err := os.ReadDir(filepath.Join(h.cfg.BaseDir, "sources", strconv.FormatUint(uint64(other), 10))); err == nil && len(entries) > 0 {
		t.Errorf("the refused uploads were stored for uid %d: %v", other, entries)
	}
	if hostState(t) != before {
		t.Errorf("the refused uploads changed the host's accounts")
	}
	if after := h.mustCtl(t, 0, "show", name, "-o", "json"); after != shownBefore {
		t.Errorf("the refused uploads changed the project:\n%s\nwas\n%s", after, shownBefore)
	}

	if err := <-slow; err != nil {
		t.Error(err)
	}
}
