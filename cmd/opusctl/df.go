package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/opus-hosting/opus/client"
	"github.com/opus-hosting/opus/internal/datasize"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

func (c *cli) dfCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "df [NAME]",
		Short: "Show the disk space projects and users take",
		Long: `df shows the disk space of your projects (every project, for an admin), or
of the one named: its code (rendered project, apps, static files), data
(database and media), data snapshots, uploaded archives its apps and their
kept revisions use, and its share of the git caches of its repositories (a
cache split evenly between the projects using it). Below, each owner's
totals: uploads against upload_quota, data snapshots against
snapshot_quota, and everything together.

A project's data directory is its own code's to write: opusd measures it
without following links and within bounds of entries, depth and time; a
size cut short is shown as ">= SIZE".

Old revisions, unused uploads and git caches are pruned after each deploy
and periodically (revisions_keep, upload_grace, git_cache_max_bytes and
git_cache_idle in opus.conf). With -o json it prints opusd's GetDiskUsage
answer.`,
		Example: `  opusctl df
  opusctl df blog
  opusctl df -o json | jq '.users[] | {user, upload_bytes, upload_quota}'`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &opusv1.GetDiskUsageRequest{}
			if len(args) == 1 {
				req.Project = args[0]
			}
			return query(c, cmd, func(ctx context.Context, cl *client.Client) (*opusv1.GetDiskUsageResponse, error) {
				return cl.RPC().GetDiskUsage(ctx, req)
			}, func(resp *opusv1.GetDiskUsageResponse) error {
				return writeDiskUsage(c.stdout, resp)
			})
		},
	}
}

// writeDiskUsage writes df's tables: projects, then owners.
func writeDiskUsage(w io.Writer, resp *opusv1.GetDiskUsageResponse) error {
	if len(resp.GetProjects()) == 0 {
		if _, err := fmt.Fprintln(w, "No projects."); err != nil {
			return err
		}
	} else {
		t := newTable(w)
		writeRow(t, "PROJECT", "OWNER", "CODE", "DATA", "SNAPSHOTS", "UPLOADS", "GIT CACHE", "REVISIONS")
		for _, p := range resp.GetProjects() {
			writeRow(t, p.GetProject(), orDash(p.GetOwner()), countText(p.GetCode()), countText(p.GetData()),
				fmt.Sprintf("%s (%d)", datasize.Text(p.GetSnapshotBytes()), p.GetSnapshots()),
				datasize.Text(p.GetUploadBytes()), datasize.Text(p.GetGitCacheBytes()), fmt.Sprint(p.GetRevisions()))
		}
		if err := t.Flush(); err != nil {
			return err
		}
	}
	if len(resp.GetUsers()) > 0 {
		fmt.Fprintln(w)
		t := newTable(w)
		writeRow(t, "OWNER", "PROJECTS", "UPLOADS", "SNAPSHOTS", "TOTAL")
		for _, u := range resp.GetUsers() {
			name := u.GetUser()
			if name == "" {
				name = fmt.Sprint(u.GetUid())
			}
			writeRow(t, name, fmt.Sprint(u.GetProjects()), ofQuota(u.GetUploadBytes(), u.GetUploadQuota()),
				ofQuota(u.GetSnapshotBytes(), u.GetSnapshotQuota()), countText(u.GetTotal()))
		}
		if err := t.Flush(); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(w, "\nEach app keeps its last %d revisions (revisions_keep), and those its data snapshots were taken with.\n", resp.GetRevisionsKeep())
	return err
}

// countText is a size, ">= SIZE" when a bounded walk was cut short.
func countText(b *opusv1.ByteCount) string {
	if b.GetAtLeast() {
		return ">= " + datasize.Text(b.GetBytes())
	}
	return datasize.Text(b.GetBytes())
}

// ofQuota is "USED of QUOTA (P%)", or USED when there is no quota.
func ofQuota(used, quota int64) string {
	if quota <= 0 {
		return datasize.Text(used) + " (no quota)"
	}
	return fmt.Sprintf("%s of %s (%d%%)", datasize.Text(used), datasize.Text(quota), used*100/quota)
}
