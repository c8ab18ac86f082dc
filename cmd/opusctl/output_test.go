package main

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

func TestPrintable(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"blog", "blog"},
		{"café 日本語 naïve 🙂 ü", "café 日本語 naïve 🙂 ü"},
		{"a b\u00a0c", "a b\u00a0c"}, // spaces are text
		{`back\slash "quoted"`, `back\slash "quoted"`},
		{"\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`},
		{"\x1b]0;title\x07", `\x1b]0;title\a`},
		{"one\ntwo", `one\ntwo`},
		{"over\rwrite", `over\rwrite`},
		{"a\tb", `a\tb`},
		{"\x00\x08\x0b\x0c\x7f", `\x00\b\v\f\x7f`},
		{"\u009b31m", `\u009b31m`}, // C1 CSI
		{"next\u0085line", `next\u0085line`},
		{"line\u2028para\u2029", `line\u2028para\u2029`},
		{"\u202aa\u202bb\u202cc\u202dd\u202ee", `\u202aa\u202bb\u202cc\u202dd\u202ee`},
		{"\u2066x\u2067y\u2068z\u2069", `\u2066x\u2067y\u2068z\u2069`},
		{"\u200ertl mark\u200f, bom\ufeff", `\u200ertl mark\u200f, bom\ufeff`},
		{"bad \xff\xfe utf8", `bad \xff\xfe utf8`},
		{"cut \xe6\x97", `cut \xe6\x97`},
		{"\U000e0041 tag", `\U000e0041 tag`},
	}
	for _, tc := range tests {
		if got := printable(tc.in); got != tc.want {
			t.Errorf("printable(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPrintableLines(t *testing.T) {
	in := "migrate failed:\nTraceback\x1b[2K\r[core:crit] forged\n  \u202eline"
	want := "migrate failed:\n  Traceback\\x1b[2K\\r[core:crit] forged\n    \\u202eline"
	if got := printableLines(in); got != want {
		t.Errorf("printableLines = %q, want %q", got, want)
	}
}

// checkTerminalSafe fails when out holds anything a terminal acts on other
// than the line breaks of its lines.
func checkTerminalSafe(t *testing.T, what, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("%s: not UTF-8: %q", what, out)
	}
	for _, r := range out {
		if r != '\n' && !strconv.IsGraphic(r) {
			t.Errorf("%s: raw %U in output:\n%q", what, r, out)
			return
		}
	}
}

func FuzzPrintable(f *testing.F) {
	for _, s := range []string{"", "blog", "\x1b[2J", "a\nb\r\t", "\u009b\u0085", "\u202e\u2066\u2069", "\xff", "日本語", "\U000e0041"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := printable(s)
		for i := 0; i < len(out); i++ {
			if c := out[i]; c < 0x20 || c == 0x7f {
				t.Fatalf("printable(%q) = %q holds control byte %#x", s, out, c)
			}
		}
		checkTerminalSafe(t, "printable", strings.ReplaceAll(out, "\n", "?"))
		if printable(out) != out {
			t.Fatalf("printable is not idempotent on %q", s)
		}
		readable := utf8.ValidString(s)
		for _, r := range s {
			readable = readable && strconv.IsGraphic(r)
		}
		if readable && out != s {
			t.Fatalf("printable changed readable text %q to %q", s, out)
		}
		got := printableLines(s)
		if strings.Count(got, "\n") != strings.Count(s, "\n") {
			t.Fatalf("printableLines(%q) = %q changed the number of lines", s, got)
		}
		for i, l := range strings.Split(got, "\n") {
			if i > 0 && !strings.HasPrefix(l, "  ") {
				t.Fatalf("printableLines(%q): line %d %q starts at the margin", s, i, l)
			}
		}
	})
}

// hostile is what a tenant (or a client choosing an upload's origin) can
// put into a value opusctl prints: escapes that recolour, retitle and
// erase, a carriage return and newline with a forged line after them, C1
// controls, bidi overrides, a tab. (Not bytes that are not UTF-8: protobuf
// strings cannot carry them; TestPrintable has those.)
const hostile = "/home/x/\x1b]0;pwned\x07\x1b[2K\r[Tue Jan 01 00:00:00 2030] [core:crit] forged\n" +
	"\u009b2J\u0085\u202eevil\u2066\tcell"

// TestHostileValuesAreEscaped: show, apps ls and ls on a project whose
// upload origin, last error, superuser name, certificate and settings are
// hostile print the same number of lines as for a plain project, nothing a
// terminal would act on, and the escapes visibly. The projects are written
// into opusd's store: the API refuses some of these values today (a
// superuser name), but opusctl must not rely on every opusd it talks to
// doing so.
func TestHostileValuesAreEscaped(t *testing.T) {
	s := startOpusd(t)
	uid := uint32(os.Getuid())
	add := func(name, text string) {
		digest := "sha256:" + strings.Repeat("ab", 32)
		err := s.Store.Update(context.Background(), func(tx *store.Tx) error {
			return tx.CreateProject(&store.Project{Name: name, OwnerUID: uid, Generation: 1, CreateTime: time.Now(),
				Spec: store.Spec{
					Apps:     []store.AppSpec{{Name: "polls", Upload: &store.UploadSource{Digest: digest, Origin: text, UploaderUID: &uid}}},
					Settings: store.Settings{Env: map[string]string{"X": text}},
				},
				Status: store.Status{Phase: store.PhaseFailed, LastError: "step migrate: " + text, ObservedGeneration: 1,
					Superuser: text, Certificate: store.CertificateStatus{Kind: text, Error: text, ErrorSince: time.Now(), RenewAt: time.Now()},
					Apps: map[string]store.AppStatus{"polls": {RequestedRef: digest, ResolvedCommit: digest,
						Revisions: []store.Revision{{RequestedRef: digest, Resolved: digest, UploaderUID: &uid}}}}},
			})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	add("tplain", "/home/x/plain\nline") // a line break as hostile has: a last error keeps it
	add("tevil", hostile)
	for _, args := range [][]string{{"show"}, {"apps", "ls"}, {"ls"}} {
		plain := runCLI(t, s.Socket, "", append(args, "tplain")...)
		evil := runCLI(t, s.Socket, "", append(args, "tevil")...)
		if args[0] == "ls" {
			plain = runCLI(t, s.Socket, "", "ls")
			evil = plain
		}
		what := strings.Join(args, " ")
		if evil.code != 0 || plain.code != 0 {
			t.Fatalf("%s: exit %d/%d: %s%s", what, plain.code, evil.code, plain.stderr, evil.stderr)
		}
		checkTerminalSafe(t, what, evil.stdout)
		if p, e := strings.Count(plain.stdout, "\n"), strings.Count(evil.stdout, "\n"); p != e {
			t.Errorf("%s: %d lines for the hostile project, %d for the plain one:\n%s", what, e, p, evil.stdout)
		}
		if args[0] != "ls" && !strings.Contains(evil.stdout, `\x1b]0;pwned\a\x1b[2K\r[Tue Jan 01`) {
			t.Errorf("%s: the origin is not shown escaped:\n%s", what, evil.stdout)
		}
	}
}

// TestHostileRowsAndLines: the other places that print server text.
func TestHostileRowsAndLines(t *testing.T) {
	var b bytes.Buffer
	if err := writeOperationTable(&b, []*opusv1.Operation{{Id: "op-1\x1b[2J", Error: hostile}}); err != nil {
		t.Fatal(err)
	}
	checkTerminalSafe(t, "ops", b.String())
	if n := strings.Count(b.String(), "\n"); n != 2 {
		t.Errorf("ops: %d lines, want 2:\n%s", n, b.String())
	}
	for _, st := range []opusv1.StepState{opusv1.StepState_STEP_STATE_FAILED, opusv1.StepState_STEP_STATE_DONE} {
		step := &opusv1.Step{Name: "migrate\x1b[1A", State: st, Message: hostile}
		checkTerminalSafe(t, "plain step line", plainStepLine(step))
		p := &progress{now: timestamppb.Now().AsTime}
		line := p.ttyStepLine(step, 12)
		// The live display's own colours are its own; what follows the icon
		// is the server's and must be inert.
		checkTerminalSafe(t, "tty step line", line[strings.Index(line, ansiReset)+len(ansiReset):])
	}
}

// TestCertificateRows: show says when the certificate from the ACME CA is
// renewed, or why getting one fails, since when, the next try, and that
// the installed one keeps serving.
func TestCertificateRows(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.Local)
	tests := []struct {
		name string
		p    *opusv1.Project
		want []string // the rows' names and texts, in order
	}{
		{"self-signed, no ACME", &opusv1.Project{Certificate: "self-signed"}, nil},
		{"renewal due", &opusv1.Project{Certificate: "acme", CertificateRenewTime: timestamppb.New(at)},
			[]string{"Renewal", "2026-03-01 12:00:00"}},
		{"failing", &opusv1.Project{Certificate: "acme", CertificateError: "the CA is down",
			CertificateErrorTime: timestamppb.New(at), CertificateRenewTime: timestamppb.New(at.Add(time.Minute))},
			[]string{"Certificate error", "the CA is down (failing since 2026-03-01 12:00:00; next try 2026-03-01 12:01:00; the certificate above keeps serving)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, r := range certificateRows(tt.p) {
				got = append(got, r[0], r[1])
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("rows %q, want %q", got, tt.want)
			}
		})
	}
}

// TestOwnerShown: ls and show name the owner by the name recorded with
// the project, which holds on every host sharing the state; its uid, a
// uid of the host it was made through, is named locally only for a
// project without one.
func TestOwnerShown(t *testing.T) {
	const nobodyHere = 4000000000 // no user has it
	tests := []struct {
		name      string
		p         *opusv1.Project
		ls, shown string
	}{
		{"recorded name", &opusv1.Project{Name: "blog", OwnerUid: nobodyHere, OwnerName: "alice"}, "alice", "alice (uid 4000000000)"},
		{"recorded name over the local one", &opusv1.Project{Name: "blog", OwnerUid: 0, OwnerName: "alice"}, "alice", "alice (uid 0)"},
		{"no name: the local one", &opusv1.Project{Name: "blog", OwnerUid: 0}, "root", "root (uid 0)"},
		{"no name, no local user", &opusv1.Project{Name: "blog", OwnerUid: nobodyHere}, "4000000000", "4000000000 (uid 4000000000)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ls, show bytes.Buffer
			if err := writeProjectTable(&ls, []*opusv1.Project{tt.p}); err != nil {
				t.Fatal(err)
			}
			if err := writeProjectDetail(&show, tt.p); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(ls.String(), "\n")
			if f := strings.Fields(lines[1]); len(f) < 2 || f[1] != tt.ls {
				t.Errorf("ls row %q: owner want %q", lines[1], tt.ls)
			}
			if !strings.Contains(show.String(), "Owner") || !strings.Contains(show.String(), tt.shown+"\n") {
				t.Errorf("show:\n%s\nwant owner %q", show.String(), tt.shown)
			}
		})
	}
}
