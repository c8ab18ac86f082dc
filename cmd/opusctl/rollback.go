package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

func (c *cli) appsRollbackCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "rollback NAME APP",
		Short: "Move an app back to its previous revision",
		Long: `apps rollback redeploys app APP of project NAME at the revision before the
current one, in one step: a git app at that revision's commit, an uploaded
app at that revision's archive. If the app's last update failed, it goes back
to the revision still deployed instead. 'opusctl show NAME' lists each app's
revisions.`,
		Example: `  opusctl apps rollback blog news
  opusctl show blog`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				return c.change(ctx, cl, fmt.Sprintf("Rolling back app %s of %s", args[1], args[0]), true, func() (*opusv1.Operation, error) {
					return cl.RollbackApp(ctx, args[0], args[1])
				})
			})
		},
	}
}
