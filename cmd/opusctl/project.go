package main

import (
	"bufio"
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

func (c *cli) lsCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List projects",
		Long: `ls lists your projects (every project, for an admin) with their owner,
phase, the host that serves them (see 'opusctl hosts'), apps and main URL.
With -o json it prints opusd's ListProjects answer.`,
		Example: `  opusctl ls
  opusctl ls -o json | jq -r '.projects[].name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return query(c, cmd, func(ctx context.Context, cl *client.Client) (*opusv1.ListProjectsResponse, error) {
				return cl.RPC().ListProjects(ctx, &opusv1.ListProjectsRequest{})
			}, func(resp *opusv1.ListProjectsResponse) error {
				if len(resp.GetProjects()) == 0 {
					_, err := fmt.Fprintln(c.stdout, "No projects. Create one with: opusctl create NAME --app DIR")
					return err
				}
				return writeProjectTable(c.stdout, resp.GetProjects())
			})
		},
	}
}

func (c *cli) showCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a project in detail",
		Long: `show prints every field of a project: owner, phase, host and system user
names, URLs, admin and superuser, certificate, generations, times, the last
error, each app as it runs (its running revision: number, commit or upload
digest, the ref asked, when, and where from; a note when its source asks for
something not deployed yet) and each app's revisions, the running one marked.`,
		Example: `  opusctl show blog
  opusctl show blog -o json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.queryProject(cmd, args[0], func(p *opusv1.Project) error {
				return writeProjectDetail(c.stdout, p)
			})
		},
	}
}

func (c *cli) destroyCommand() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "destroy NAME",
		Short: "Tear a project down and forget it",
		Long: `destroy removes a project entirely: its virtual host, backend (every
process of it), certificate, files, data, data snapshots and Linux user, and
the PostgreSQL database Opus made for it (--database provision; a database
you named with --database is left as it is). This cannot be undone.

On a terminal you are asked to type the project's name to confirm. Without a
terminal (scripts, CI) --yes is required, so that nothing is destroyed by a
command that was not meant for it.`,
		Example: `  opusctl destroy blog
  opusctl destroy blog --yes --no-wait`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !yes {
				if _, ok := terminal(c.stdin); !ok {
					return usagef("refusing to destroy %s without confirmation: stdin is not a terminal; pass --yes", name)
				}
				fmt.Fprintf(c.stderr, "This destroys project %s with all its data. Type the name to confirm: ", printable(name))
				line, _ := bufio.NewReader(c.stdin).ReadString('\n')
				if strings.TrimSpace(line) != name {
					return fmt.Errorf("not confirmed; project %s is left as it is", name)
				}
			}
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				return c.change(ctx, cl, "Destroying project "+name, false, func() (*opusv1.Operation, error) {
					return cl.DeleteProject(ctx, name)
				})
			})
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation (required without a terminal)")
	return cmd
}

func (c *cli) waitCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "wait OP",
		Short: "Follow an operation until it ends",
		Long: `wait follows operation OP (as printed by --no-wait or 'opusctl ops'),
showing its steps, and exits with status 1 if it failed. It survives an
opusd restart: it picks the operation up again where it is.`,
		Example: `  op=$(opusctl create blog --app ./polls --no-wait)
  opusctl wait "$op"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				op, err := cl.GetOperation(ctx, args[0])
				if err != nil {
					return err
				}
				title := fmt.Sprintf("Operation %s of project %s", opKindName(op.GetKind()), op.GetProject())
				showURLs := op.GetKind() != opusv1.OperationKind_OPERATION_KIND_DELETE
				return c.follow(ctx, cl, op, title, showURLs)
			})
		},
	}
}

func (c *cli) opsCommand() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "ops NAME",
		Short: "List a project's recent operations",
		Long: `ops lists a project's recent operations, newest first, with their kind,
state, start time, duration and error.`,
		Example: `  opusctl ops blog
  opusctl ops blog --limit 5 -o json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 0 || limit > 1000 {
				return usagef("--limit must be 0 to 1000")
			}
			return query(c, cmd, func(ctx context.Context, cl *client.Client) (*opusv1.ListOperationsResponse, error) {
				return cl.RPC().ListOperations(ctx, &opusv1.ListOperationsRequest{Project: args[0], Limit: int32(limit)})
			}, func(resp *opusv1.ListOperationsResponse) error {
				return writeOperationTable(c.stdout, resp.GetOperations())
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many operations (0: the server's default, 20)")
	return cmd
}
