package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

func (c *cli) appsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "apps",
		Short: "Add, remove, update, roll back and list a project's apps",
		Long: `apps changes the apps of a live project. Each change is deployed at once;
if it fails, the project's previous working state keeps serving.

` + sourceHelp,
		Example: `  opusctl apps ls blog
  opusctl apps add blog https://git.example.com/news.git@main
  opusctl apps update blog news v2.0
  opusctl apps revisions blog news
  opusctl apps rollback blog news --to 2
  opusctl apps rm blog news --drop-data`,
		Args: cobra.NoArgs,
		// Runnable, so that an unknown subcommand is a usage error (Args
		// applies) instead of a silent help page.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(c.appsAddCommand(), c.appsRmCommand(), c.appsUpdateCommand(), c.appsRollbackCommand(), c.appsRevisionsCommand(), c.appsLsCommand())
	return cmd
}

func (c *cli) appsLsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ls NAME",
		Short: "List a project's apps",
		Long: `apps ls lists a project's apps as they run: each app's running revision
(its number, commit or upload digest, the ref it was asked for, when it was
deployed and where it came from), and a note for an app whose source asks
for something not deployed yet. 'opusctl apps revisions NAME APP' lists all
of an app's revisions. With -o json it prints the whole project as
'opusctl show -o json' does.`,
		Example: `  opusctl apps ls blog
  opusctl apps ls blog -o json | jq '.apps'`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.queryProject(cmd, args[0], func(p *opusv1.Project) error {
				if len(p.GetApps()) == 0 {
					name := printable(p.GetName())
					_, err := fmt.Fprintf(c.stdout, "Project %s has no apps. Add one with: opusctl apps add %s SRC\n", name, name)
					return err
				}
				return writeAppTable(c.stdout, p, "")
			})
		},
	}
}

func (c *cli) appsAddCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "add NAME [APP=]SRC[@REF]",
		Short: "Add an app to a project",
		Long: `apps add adds an app to project NAME and deploys it (sources, settings,
migrations, reload). See 'opusctl apps --help' for SRC.`,
		Example: `  opusctl apps add blog ./polls
  opusctl apps add blog news=git@git.example.com:me/news.git@v1.0`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := parseSource(args[1], os.Stat)
			if err != nil {
				return usageError{err}
			}
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				spec, err := c.appSpec(ctx, cl, src)
				if err != nil {
					return err
				}
				return c.change(ctx, cl, fmt.Sprintf("Adding app %s to %s", spec.GetName(), args[0]), true, func() (*opusv1.Operation, error) {
					return cl.AddApp(ctx, args[0], spec)
				})
			})
		},
	}
}

func (c *cli) appsRmCommand() *cobra.Command {
	var dropData bool
	cmd := &cobra.Command{
		Use:     "rm NAME APP",
		Aliases: []string{"remove"},
		Short:   "Remove an app from a project",
		Long: `apps rm takes app APP out of project NAME. Its database tables are kept
unless --drop-data is given, so adding the app again finds its data.`,
		Example: `  opusctl apps rm blog polls
  opusctl apps rm blog polls --drop-data`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				return c.change(ctx, cl, fmt.Sprintf("Removing app %s from %s", args[1], args[0]), true, func() (*opusv1.Operation, error) {
					return cl.RemoveApp(ctx, args[0], args[1], dropData)
				})
			})
		},
	}
	cmd.Flags().BoolVar(&dropData, "drop-data", false, "also remove the app's database tables")
	return cmd
}

func (c *cli) appsUpdateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "update NAME APP REF|SRC[@REF]",
		Short: "Move an app to another version or source",
		Long: `apps update redeploys app APP of project NAME.

Given a REF (branch, tag or commit), a git app moves to it from the same
repository. Given a SRC (a URL, or a path: anything with ':' or starting with
'/', './' or '../', or an existing directory), the app's source is replaced:
a plain directory is packed and uploaded again, which is how an uploaded app
is updated. See 'opusctl apps --help' for SRC.`,
		Example: `  opusctl apps update blog news v2.1
  opusctl apps update blog news main
  opusctl apps update blog polls ./polls
  opusctl apps update blog news https://git.example.com/news-fork.git@main`,
		Args:              cobra.ExactArgs(3),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			project, app, arg := args[0], args[1], args[2]
			var src *appSource
			if looksLikeSource(arg, os.Stat) {
				s, err := parseSource(arg, os.Stat)
				if err != nil {
					return usageError{err}
				}
				src = &s
			}
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				var source *opusv1.AppSource
				if src != nil {
					src.name = app
					spec, err := c.appSpec(ctx, cl, *src)
					if err != nil {
						return err
					}
					source = spec.GetSource()
				} else {
					// A ref: keep the app's repository, move the ref.
					p, err := cl.GetProject(ctx, project)
					if err != nil {
						return err
					}
					a, err := findApp(p, app)
					if err != nil {
						return err
					}
					g := a.GetSource().GetGit()
					if g == nil {
						return usagef("app %s of %s was uploaded, so it has no refs; give the directory to upload again (for example ./%s)", app, project, app)
					}
					source = &opusv1.AppSource{Kind: &opusv1.AppSource_Git{Git: &opusv1.GitSource{Url: g.GetUrl(), Ref: arg}}}
				}
				op, err := cl.UpdateApp(ctx, project, app, source)
				if err != nil {
					return err
				}
				if op.GetUnchanged() {
					if c.output == outputJSON {
						return writeJSON(c.stdout, op)
					}
					_, err := fmt.Fprintf(c.stdout, "Nothing to change: app %s of %s already runs exactly that code.\n", printable(app), printable(project))
					return err
				}
				return c.change(ctx, cl, fmt.Sprintf("Updating app %s of %s", app, project), true, func() (*opusv1.Operation, error) {
					return op, nil
				})
			})
		},
	}
}

// findApp returns a project's app by name.
func findApp(p *opusv1.Project, name string) (*opusv1.App, error) {
	for _, a := range p.GetApps() {
		if a.GetName() == name {
			return a, nil
		}
	}
	return nil, fmt.Errorf("project %s has no app %q", p.GetName(), name)
}
