package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// TestAppTableDescribesTheRunningRevision: apps ls (and show) describe
// the revision each app runs, not the source its spec names, and say
// when the spec asks for something else.
func TestAppTableDescribesTheRunningRevision(t *testing.T) {
	const repo, fork = "https://git.example.com/news.git", "https://git.example.com/fork.git"
	c1, c2 := strings.Repeat("1", 40), strings.Repeat("2", 40)
	digest := "sha256:" + strings.Repeat("ab", 32)
	at := timestamppb.Now()
	git := func(url, ref string) *opusv1.AppSource {
		return &opusv1.AppSource{Kind: &opusv1.AppSource_Git{Git: &opusv1.GitSource{Url: url, Ref: ref}}}
	}
	history := []*opusv1.Revision{
		{Number: 1, RequestedRef: "v1", Resolved: c1, Url: repo, Time: at, Subject: "First release"},
		{Number: 2, RequestedRef: "main", Resolved: c2, Url: repo, Time: at},
		{Number: 3, RequestedRef: c1, Resolved: c1, Url: repo, RollbackOf: 1, Time: at, Subject: "First release \x1b[2J"},
	}
	tests := []struct {
		name  string
		phase opusv1.Phase
		app   *opusv1.App
		row   string // the app's row, fields joined by one space
		note  string // "" for none
	}{
		{"rolled back", opusv1.Phase_PHASE_READY,
			&opusv1.App{Name: "news", Source: git(repo, c1), RequestedRef: c1, ResolvedCommit: c1, Revisions: history, RunningRevision: 3},
			"news 3 111111111111 v1 (rollback to 1) " + formatTime(at) + " " + repo + ` First release \x1b[2J`, ""},
		{"deploying another repository", opusv1.Phase_PHASE_DEPLOYING,
			&opusv1.App{Name: "news", Source: git(fork, "v9"), RequestedRef: "v9", ResolvedCommit: c2, Revisions: history[:2], RunningRevision: 2, Pending: true},
			"news 2 222222222222 main " + formatTime(at) + " " + repo + " -", "news: deploying v9 of " + fork + "; revision 2 runs until it is done"},
		{"asks for what is not deployed", opusv1.Phase_PHASE_FAILED,
			&opusv1.App{Name: "news", Source: git(repo, "v3"), RequestedRef: "v3", ResolvedCommit: c2, Revisions: history[:2], RunningRevision: 2, Pending: true},
			"news 2 222222222222 main " + formatTime(at) + " " + repo + " -", "news: asks for v3 of " + repo + ", which is not deployed; revision 2 runs"},
		{"first deploy", opusv1.Phase_PHASE_PENDING,
			&opusv1.App{Name: "news", Source: git(repo, ""), Pending: true},
			"news - - - - " + repo + " -", "news: deploying the default branch of " + repo + "; not running yet"},
		{"upload", opusv1.Phase_PHASE_READY,
			&opusv1.App{Name: "polls", Source: &opusv1.AppSource{Kind: &opusv1.AppSource_Upload{Upload: &opusv1.UploadedSource{Digest: digest, Origin: "/src/polls"}}},
				RequestedRef: digest, ResolvedCommit: digest, RunningRevision: 1,
				Revisions: []*opusv1.Revision{{Number: 1, RequestedRef: digest, Resolved: digest, Origin: "/src/polls", Time: at}}},
			"polls 1 sha256:abababababab - " + formatTime(at) + " upload /src/polls -", ""},
		{"from an opusd that did not number revisions", opusv1.Phase_PHASE_READY,
			&opusv1.App{Name: "news", Source: git(repo, "main"), RequestedRef: "main", ResolvedCommit: c2,
				Revisions: []*opusv1.Revision{{RequestedRef: "v1", Resolved: c1}, {RequestedRef: "main", Resolved: c2}}},
			"news 2 222222222222 main - - -", ""},
	}
	for _, tc := range tests {
		var b bytes.Buffer
		if err := writeAppTable(&b, &opusv1.Project{Name: "blog", Phase: tc.phase, Apps: []*opusv1.App{tc.app}}, ""); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
		want := 2
		if tc.note != "" {
			want = 3
		}
		if len(lines) != want || strings.Join(strings.Fields(lines[1]), " ") != tc.row || tc.note != "" && lines[2] != tc.note {
			t.Errorf("%s:\n%s\nwant row %q, note %q", tc.name, b.String(), tc.row, tc.note)
		}
	}
}

// TestDataSnapshotsTable: apps revisions lists the data snapshots newest
// first, each with its size in words (as opusd's snapshot step says it)
// and the revision the app ran, "-" when it did not run yet.
func TestDataSnapshotsTable(t *testing.T) {
	at := func(s int64) *timestamppb.Timestamp { return timestamppb.New(time.Unix(1_800_000_000+s, 0)) }
	snaps := []*opusv1.DataSnapshot{ // oldest first, as opusd sends them
		{Id: "s1", Time: at(0), SizeBytes: 512, Engine: "sqlite"},
		{Id: "s2", Time: at(60), SizeBytes: 131072, Engine: "sqlite", Revisions: []*opusv1.AppRevision{{App: "shop", Number: 1}, {App: "other", Number: 7}}},
		{Id: "s3", Time: at(120), SizeBytes: 5 << 20, Engine: "postgresql", Revisions: []*opusv1.AppRevision{{App: "shop", Number: 2}}},
	}
	var b bytes.Buffer
	if err := writeDataSnapshots(&b, "shop", snaps); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want a title, a header and 3 rows:\n%s", len(lines), b.String())
	}
	for i, want := range [][]string{
		{"SNAPSHOT", "TAKEN", "SIZE", "REVISION OF shop", "ENGINE"},
		{"s3", formatTime(at(120)), "5.0 MiB", "2", "postgresql"},
		{"s2", formatTime(at(60)), "128.0 KiB", "1", "sqlite"},
		{"s1", formatTime(at(0)), "512 bytes", "-", "sqlite"},
	} {
		if got := strings.Fields(lines[i+1]); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("line %d: %q, want %q", i+1, lines[i+1], strings.Join(want, "  "))
		}
	}
}
