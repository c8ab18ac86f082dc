package main

import (
	"bufio"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

func (c *cli) appsRollbackCommand() *cobra.Command {
	var to string
	var withData, yes bool
	cmd := &cobra.Command{
		Use:   "rollback NAME APP [--to REVISION]",
		Short: "Move an app back to an earlier revision",
		Long: `apps rollback redeploys app APP of project NAME at one of its recorded
revisions, in one step: a git app at that revision's commit, an uploaded app at
that revision's archive (kept for the app's last two revisions only).

--to names the revision: its number as 'opusctl apps revisions NAME APP' lists
it (1 is the app's first), or at least 7 hex digits of its commit or upload
digest. Without --to, the app goes back to the revision before the running
one; if its last update did not deploy, to the revision that runs.

The rollback is recorded as a new revision that says which one it went back
to, so it can itself be undone. Asking for the revision that already runs
changes nothing and says so. The database is not rolled back (migrations
that ran since stay applied) unless --with-data is given.

Before every change that runs migrations, Opus keeps a copy of the project's
database (see 'opusctl apps revisions'). --with-data also puts the database
back as it was in the newest copy taken while APP ran the target revision:
everything written to the database since that copy, by any app of the
project, is lost. You are shown when the copy was taken and asked to confirm
(--yes skips that; it is required without a terminal). Refused when no such
copy is kept.`,
		Example: `  opusctl apps revisions blog news
  opusctl apps rollback blog news --to 2
  opusctl apps rollback blog news --to 3f2a9c1
  opusctl apps rollback blog news
  opusctl apps rollback blog news --to 2 --with-data`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			project, app := args[0], args[1]
			if withData && !yes {
				if _, ok := terminal(c.stdin); !ok {
					return usagef("refusing to roll back the data of %s without confirmation: stdin is not a terminal; pass --yes", project)
				}
			}
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				req := &opusv1.RollbackAppRequest{Project: project, App: app, To: to, WithData: withData}
				if withData {
					check := proto.Clone(req).(*opusv1.RollbackAppRequest)
					check.ValidateOnly = true
					plan, err := cl.RollbackAppRequest(ctx, check)
					if status.Code(err) == codes.InvalidArgument {
						return usageError{err}
					}
					if err != nil {
						return err
					}
					snap := plan.GetDataSnapshot()
					fmt.Fprintf(c.stderr, "This puts the database of project %s back as it was at %s (data snapshot %s).\nEverything written to it since then, by any app of %s, is lost.\n",
						printable(project), snap.GetTime().AsTime().Local().Format(time.RFC1123), printable(snap.GetId()), printable(project))
					if !yes {
						fmt.Fprintf(c.stderr, "Type the project's name to confirm: ")
						line, _ := bufio.NewReader(c.stdin).ReadString('\n')
						if strings.TrimSpace(line) != project {
							return fmt.Errorf("not confirmed; project %s is left as it is", project)
						}
					}
					req.DataSnapshot = snap.GetId()
				}
				op, err := cl.RollbackAppRequest(ctx, req)
				if status.Code(err) == codes.InvalidArgument {
					// What --to (or NAME, APP) says is wrong: a usage error.
					return usageError{err}
				}
				if err != nil {
					return err
				}
				if op.GetUnchanged() {
					if c.output == outputJSON {
						return writeJSON(c.stdout, op)
					}
					_, err := fmt.Fprintf(c.stdout, "Nothing to change: app %s of %s already runs that revision.\n", printable(app), printable(project))
					return err
				}
				title := fmt.Sprintf("Rolling back app %s of %s", app, project)
				if to != "" {
					title += " to " + to
				}
				return c.change(ctx, cl, title, true, func() (*opusv1.Operation, error) { return op, nil })
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the revision to go back to: its number, or a commit or digest prefix (7+ hex digits)")
	cmd.Flags().BoolVar(&withData, "with-data", false, "also put the database back as it was before the revision being left (data written since is lost)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "with --with-data: do not ask for confirmation (required without a terminal)")
	return cmd
}
