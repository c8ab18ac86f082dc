package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

func (c *cli) hostsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "hosts",
		Short: "List the hosts of this Opus",
		Long: `hosts lists the hosts whose opusd is alive: on one machine, this one; with
the state in etcd (state_store etcd in opus.conf), every host sharing it.
Each row says where the host's web front answers (a project's name must
resolve to its host's front), how many projects it takes (its capacity) and
how many it serves. The host this opusctl asked is marked with '*'.

A new project goes to the live host with the most room, or to the one
'opusctl create NAME --host HOST' names. A project whose host is not listed
here is UNREACHABLE: it may still serve, but nothing about it changes until
its host is back. With -o json it prints opusd's ListHosts answer.`,
		Example: `  opusctl hosts
  opusctl hosts -o json | jq -r '.hosts[].name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return query(c, cmd, func(ctx context.Context, cl *client.Client) (*opusv1.ListHostsResponse, error) {
				return cl.RPC().ListHosts(ctx, &opusv1.ListHostsRequest{})
			}, func(resp *opusv1.ListHostsResponse) error {
				return writeHosts(c.stdout, resp.GetHosts())
			})
		},
	}
}

// writeHosts writes the hosts table.
func writeHosts(w io.Writer, hs []*opusv1.Host) error {
	if len(hs) == 0 {
		_, err := fmt.Fprintln(w, "No host is answering.")
		return err
	}
	tw := newTable(w)
	writeRow(tw, "NAME", "FRONT", "PROJECTS", "CAPACITY", "SINCE")
	for _, h := range hs {
		name := h.GetName()
		if h.GetThis() {
			name += " *"
		}
		writeRow(tw, name, orDash(h.GetFront()), fmt.Sprint(h.GetProjects()), fmt.Sprint(h.GetCapacity()), formatTime(h.GetSince()))
	}
	return tw.Flush()
}

func (c *cli) moveCommand() *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "move NAME --to HOST",
		Short: "Move a project to another host with its data",
		Long: `move moves project NAME to host HOST (see 'opusctl hosts') with its data:
its host takes a copy of the database and the media files, HOST fetches it and
deploys its own copy of the project from the same spec while the old one
serves on. Once HOST's copy answers, the old one stops for a moment (its
site answers 503) while its data is copied once more, with everything written
since the first copy; HOST loads that, its copy becomes the project, and the
old host removes its own. Point the project's name at HOST's front then.
Changes to the project are refused until the move is done; if HOST's copy
fails, it is removed and the project stays where it was.

A project moves when it is deployed at its current spec, keeps its data in
SQLite and takes its apps from git (an uploaded archive is kept by the host
that received it). Both hosts need peer_listen in their opus.conf.`,
		Example:           `  opusctl move blog --to web2`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkProjectName(name); err != nil {
				return err
			}
			if to == "" {
				return usagef("--to is required: the host to move %s to (see opusctl hosts)", name)
			}
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				return c.change(ctx, cl, fmt.Sprintf("Moving project %s to host %s", name, to), true, func() (*opusv1.Operation, error) {
					return cl.RPC().MoveProject(ctx, &opusv1.MoveProjectRequest{Name: name, To: to})
				})
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the host to move the project to")
	return cmd
}
