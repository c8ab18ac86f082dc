package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// Output formats of -o.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// writeJSON writes m as multi-line JSON with proto field names and every
// field present. protojson deliberately varies its whitespace between
// builds; re-indenting with encoding/json makes the output stable, so
// scripts and diffs can rely on it.
func writeJSON(w io.Writer, m proto.Message) error {
	raw, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	out.WriteByte('\n')
	_, err = w.Write(out.Bytes())
	return err
}

// printable returns s as it may safely reach a terminal. It is the one
// escaping function of opusctl's human output: every string that came
// from opusd (which passes on what tenants, their code and their logs
// wrote: upload origins, error messages, log lines) goes through it on
// its way out; -o json needs none (encoding/json escapes).
//
// Readable text — any graphic Unicode and spaces — is kept as it is.
// Everything else is written as a visible Go-style escape: C0 controls
// and DEL (\n, \r, \t, \x1b, \x7f), so a value can neither move the cursor,
// recolour, retitle or clear the screen nor start what looks like a new
// line or table cell; C1 controls (\u009b, a one-byte CSI to some
// terminals; \u0085, a line break); line and paragraph separators; the
// bidi embeddings, overrides and isolates (\u202a-\u202e,
// \u2066-\u2069) and every other invisible format character, which
// reorder or hide what a reader sees; and bytes that are not UTF-8 (\xff).
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !strconv.IsGraphic(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case strconv.IsGraphic(r):
			b.WriteString(s[i : i+n])
		default:
			q := strconv.QuoteRune(r) // '\x1b', '\u202e', '\n'
			b.WriteString(q[1 : len(q)-1])
		}
		i += n
	}
	return b.String()
}

// firstLine is s up to its first line break, with " ..." when more
// follows: an error's first line names it (a failed manage.py's exception
// line is there), and a table row has room for one.
func firstLine(s string) string {
	if first, _, more := strings.Cut(strings.TrimSpace(s), "\n"); more {
		return first + " ..."
	}
	return s
}

// printableLines is printable for a message that is meant to span lines
// (an error with a traceback or log lines in it): each line is escaped,
// the line breaks between them are kept, and every line after the first is
// indented, so that no text a tenant put into the message can pass for a
// line of opusctl's own (which start at the margin).
func printableLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = printable(l)
		if i > 0 {
			lines[i] = "  " + lines[i]
		}
	}
	return strings.Join(lines, "\n")
}

// newTable returns a tabwriter for aligned columns; write its rows with
// writeRow.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// writeRow writes one table row: every cell made printable (so no value
// can add a column or a row), the cells separated by tabs.
func writeRow(w io.Writer, cells ...string) {
	out := make([]string, len(cells))
	for i, c := range cells {
		out[i] = printable(c)
	}
	fmt.Fprintln(w, strings.Join(out, "\t"))
}

// userName returns the login name of uid, or the number when unknown.
func userName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil {
		return u.Username
	}
	return id
}

// ownerName is the name of p's owner: the one recorded with it, which
// holds on every host sharing the state (its uid is a uid of the host it
// was made through), or else the local name of its uid.
func ownerName(p *opusv1.Project) string {
	if n := p.GetOwnerName(); n != "" {
		return n
	}
	return userName(p.GetOwnerUid())
}

// phaseName is "READY", "FAILED", ...
func phaseName(p opusv1.Phase) string { return strings.TrimPrefix(p.String(), "PHASE_") }

// opStateName is "SUCCEEDED", "FAILED", ...
func opStateName(s opusv1.OperationState) string {
	return strings.TrimPrefix(s.String(), "OPERATION_STATE_")
}

// opKindName is "create", "add_app", ...
func opKindName(k opusv1.OperationKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "OPERATION_KIND_"))
}

// formatTime is a local time, or "-" when unset.
func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().Local().Format("2006-01-02 15:04:05")
}

// orDash keeps empty table cells visible.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// sourceString describes an app source for people.
func sourceString(src *opusv1.AppSource) string {
	switch k := src.GetKind().(type) {
	case *opusv1.AppSource_Git:
		return k.Git.GetUrl()
	case *opusv1.AppSource_Upload:
		return "upload " + orDash(k.Upload.GetOrigin())
	}
	return "-"
}

// shortCommit shortens a git commit to 12 characters and a digest to
// "sha256:" plus 12.
func shortCommit(s string) string {
	const n = 12
	if rest, ok := strings.CutPrefix(s, "sha256:"); ok {
		if len(rest) > n {
			rest = rest[:n]
		}
		return "sha256:" + rest
	}
	if len(s) > n {
		return s[:n]
	}
	return orDash(s)
}

// primaryURL picks the URL to show in a one-line listing: https first.
func primaryURL(urls []string) string {
	for _, u := range urls {
		if strings.HasPrefix(u, "https://") {
			return u
		}
	}
	if len(urls) > 0 {
		return urls[0]
	}
	return "-"
}

func writeProjectTable(w io.Writer, ps []*opusv1.Project) error {
	tw := newTable(w)
	writeRow(tw, "NAME", "OWNER", "PHASE", "HOST", "APPS", "URL")
	for _, p := range ps {
		var apps []string
		for _, a := range p.GetApps() {
			apps = append(apps, a.GetName())
		}
		writeRow(tw, p.GetName(), ownerName(p), phaseName(p.GetPhase()), orDash(p.GetHost()), orDash(strings.Join(apps, ",")), primaryURL(p.GetUrls()))
	}
	return tw.Flush()
}

// certificateRows say when the certificate from the ACME CA is renewed,
// or why getting one fails and that the one installed keeps serving.
func certificateRows(p *opusv1.Project) [][2]string {
	next := p.GetCertificateRenewTime()
	if e := p.GetCertificateError(); e != "" {
		msg := e + " (failing since " + formatTime(p.GetCertificateErrorTime())
		if next != nil {
			msg += "; next try " + formatTime(next)
		}
		return [][2]string{{"Certificate error", msg + "; the certificate above keeps serving)"}}
	}
	if next != nil {
		return [][2]string{{"Renewal", formatTime(next)}}
	}
	return nil
}

func writeProjectDetail(w io.Writer, p *opusv1.Project) error {
	tw := newTable(w)
	yesNo := map[bool]string{true: "yes", false: "no"}
	cert := orDash(p.GetCertificate())
	if na := p.GetCertificateNotAfter(); na != nil {
		cert += " (until " + formatTime(na) + ")"
	}
	rows := [][2]string{
		{"Name", p.GetName()},
		{"Owner", fmt.Sprintf("%s (uid %d)", ownerName(p), p.GetOwnerUid())},
		{"Phase", phaseName(p.GetPhase())},
		{"Host", orDash(p.GetHost())},
		{"Server name", orDash(p.GetServerName())},
		{"System user", orDash(p.GetSystemUser())},
		{"URLs", orDash(strings.Join(p.GetUrls(), " "))},
		{"Admin", yesNo[p.GetAdmin()]},
		{"Superuser", orDash(p.GetSuperuserName())},
		{"Certificate", cert},
	}
	rows = append(rows, certificateRows(p)...)
	rows = append(rows, [][2]string{
		{"Generation", fmt.Sprintf("%d (observed %d)", p.GetGeneration(), p.GetObservedGeneration())},
		{"Created", formatTime(p.GetCreateTime())},
		{"Updated", formatTime(p.GetUpdateTime())},
		lastRow(p),
	}...)
	for _, r := range rows {
		writeRow(tw, r[0]+":", r[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The rest of a multi-line error (a traceback under its exception
	// line) follows the table with its line breaks, indented under it.
	if _, rest, ok := strings.Cut(p.GetLastError(), "\n"); ok {
		for _, l := range strings.Split(rest, "\n") {
			fmt.Fprintln(w, "    "+printable(l))
		}
	}
	if s := p.GetSettings(); s != nil {
		if err := writeSettings(w, s); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "Apps:")
	if len(p.GetApps()) == 0 {
		fmt.Fprintln(w, "  (none)")
		return nil
	}
	if err := writeAppTable(w, p, "  "); err != nil {
		return err
	}
	return writeRevisions(w, p.GetApps())
}

func writeOperationTable(w io.Writer, ops []*opusv1.Operation) error {
	tw := newTable(w)
	writeRow(tw, "ID", "KIND", "STATE", "STARTED", "DURATION", "ERROR")
	for _, op := range ops {
		dur := "-"
		if op.GetCreateTime() != nil && op.GetEndTime() != nil {
			dur = formatElapsed(op.GetEndTime().AsTime().Sub(op.GetCreateTime().AsTime()))
		} else if op.GetCreateTime() != nil {
			dur = formatElapsed(time.Since(op.GetCreateTime().AsTime())) + "…"
		}
		writeRow(tw, op.GetId(), opKindName(op.GetKind()), opStateName(op.GetState()), formatTime(op.GetCreateTime()), dur, orDash(oneLine(firstLine(op.GetError()))))
	}
	return tw.Flush()
}

// lastRow is show's last row: why the project is FAILED, or that its last
// change failed and was undone (the project serves what it served before).
func lastRow(p *opusv1.Project) [2]string {
	if id := p.GetLastFailedOperation(); id != "" {
		return [2]string{"Last change", fmt.Sprintf("failed, nothing of it was applied: %s (operation %s)", oneLine(firstLine(p.GetLastError())), id)}
	}
	return [2]string{"Last error", orDash(oneLine(firstLine(p.GetLastError())))}
}
