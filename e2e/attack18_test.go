package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math/rand/v2"
	"net/http"
	"regexp"
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
