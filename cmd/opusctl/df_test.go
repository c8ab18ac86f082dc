package main

import (
	"bytes"
	"strings"
	"testing"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// TestWriteDiskUsage: df's tables show each size for people, a size cut
// short as ">= SIZE", quotas with the share used (or none), and a
// tenant-made owner name cannot add a row.
func TestWriteDiskUsage(t *testing.T) {
	resp := &opusv1.GetDiskUsageResponse{RevisionsKeep: 4,
		Projects: []*opusv1.ProjectDiskUsage{{Project: "blog", Owner: "ann\nevil", Code: &opusv1.ByteCount{Bytes: 2048},
			Data: &opusv1.ByteCount{Bytes: 3 << 20, AtLeast: true}, SnapshotBytes: 512, Snapshots: 2, UploadBytes: 1 << 10, GitCacheBytes: 5 << 10, Revisions: 3}},
		Users: []*opusv1.UserDiskUsage{{Uid: 1000, User: "ann", Projects: 1, UploadBytes: 1 << 20, UploadQuota: 4 << 20,
			SnapshotBytes: 512, Total: &opusv1.ByteCount{Bytes: 7 << 20, AtLeast: true}}},
	}
	var b bytes.Buffer
	if err := writeDiskUsage(&b, resp); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"2.0 KiB", ">= 3.0 MiB", "512 bytes (2)", "5.0 KiB", "1.0 MiB of 4.0 MiB (25%)", "512 bytes (no quota)", ">= 7.0 MiB", "last 4 revisions"} {
		if !strings.Contains(out, want) {
			t.Errorf("df output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ann\nevil") {
		t.Errorf("a newline in a value made a row:\n%s", out)
	}
	b.Reset()
	if err := writeDiskUsage(&b, &opusv1.GetDiskUsageResponse{}); err != nil || !strings.HasPrefix(b.String(), "No projects.") {
		t.Errorf("empty: %q, %v", b.String(), err)
	}
}
