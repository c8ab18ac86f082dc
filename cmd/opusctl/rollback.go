package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

func (c *cli) appsRollbackCommand() *cobra.Command {
	var to string
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
changes nothing and says so. The database is not rolled back: migrations
that ran since stay applied.`,
		Example: `  opusctl apps revisions blog news
  opusctl apps rollback blog news --to 2
  opusctl apps rollback blog news --to 3f2a9c1
  opusctl apps rollback blog news`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			project, app := args[0], args[1]
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				op, err := cl.RollbackApp(ctx, project, app, to)
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
	return cmd
}
