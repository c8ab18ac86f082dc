package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

func (c *cli) setCommand() *cobra.Command {
	var unset []string
	cmd := &cobra.Command{
		Use:   "set NAME [KEY=VALUE ...] [--unset KEY ...]",
		Short: "Change a project's settings",
		Long: `set changes owner-level settings of project NAME and applies them with a
restart of the project's own daemon (a change of host names also reloads
the front Apache, which restarts no project's code). Keys:

  debug=true|false     Django's DEBUG
  admin=true|false     Django's admin at /admin/
  hosts=a.example,b.example
                       extra host names (ServerAlias, ALLOWED_HOSTS and
                       names of the self-signed certificate); replaces the list
  env.NAME=VALUE       an environment variable of the app (NAME in
                       uppercase letters, digits and '_')

Admins only, the bounds of the project's backend (its Apache, its mod_wsgi
daemon and what they start) in place of the host's defaults (backend_memory,
backend_tasks and backend_cpu in opus.conf); --unset goes back to them:

  memory=512M          memory (K, M, G or T; 64M to 1T)
  tasks=256            processes and threads (32 or more)
  cpu=50               percent of one CPU (200 is two CPUs; 5 or more)

Values are data: they are never written into Python or Apache configuration,
and anything that is not a valid value (a host name with a space or a newline,
a debug value other than true/false) is refused. --unset removes a key
(debug and admin go back to off). When the project already has and serves
the settings given, nothing is recorded or restarted: set says so and exits 0
(with -o json, an operation with "unchanged": true and no id).`,
		Example: `  opusctl set blog debug=true
  opusctl set blog hosts=blog.example.com,www.blog.example.com
  opusctl set blog env.API_URL=https://api.example.com --unset env.OLD
  opusctl set blog --unset hosts
  opusctl set blog memory=2G cpu=200`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			set := map[string]string{}
			for _, kv := range args[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usagef("%q is not KEY=VALUE", kv)
				}
				if _, dup := set[k]; dup {
					return usagef("%s is given twice", k)
				}
				set[k] = v
			}
			if len(set) == 0 && len(unset) == 0 {
				return usagef("nothing to change: give KEY=VALUE or --unset KEY")
			}
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				name := args[0]
				op, err := cl.UpdateSettings(ctx, name, set, unset)
				if err != nil {
					return err
				}
				if op.GetUnchanged() {
					if c.output == outputJSON {
						return writeJSON(c.stdout, op)
					}
					_, err := fmt.Fprintf(c.stdout, "Nothing to change: the settings of %s are already as given.\n", name)
					return err
				}
				err = c.change(ctx, cl, fmt.Sprintf("Changing the settings of %s", name), false, func() (*opusv1.Operation, error) {
					return op, nil
				})
				if err != nil || !c.shouldWait() || c.output == outputJSON {
					return err
				}
				p, err := cl.GetProject(ctx, name)
				if err != nil {
					return fmt.Errorf("the settings were applied, but reading project %s failed: %w", name, err)
				}
				return writeSettings(c.stdout, p.GetSettings())
			})
		},
	}
	cmd.Flags().StringArrayVar(&unset, "unset", nil, "remove a setting (repeatable): debug, admin, hosts, env.NAME, memory, tasks or cpu")
	return cmd
}

// writeSettings prints settings for people, one per line.
func writeSettings(w io.Writer, s *opusv1.Settings) error {
	tw := newTable(w)
	yesNo := map[bool]string{true: "on", false: "off"}
	writeRow(tw, "Settings:")
	writeRow(tw, "  debug", yesNo[s.GetDebug()])
	writeRow(tw, "  admin", yesNo[s.GetAdmin()])
	writeRow(tw, "  hosts", orDash(strings.Join(s.GetHosts(), ",")))
	limit := func(v uint64, format func(uint64) string) string {
		if v == 0 {
			return "host default"
		}
		return format(v)
	}
	writeRow(tw, "  memory", limit(s.GetMemoryBytes(), func(v uint64) string { return fmt.Sprintf("%d MiB", v>>20) }))
	writeRow(tw, "  tasks", limit(uint64(s.GetTasks()), func(v uint64) string { return strconv.FormatUint(v, 10) }))
	writeRow(tw, "  cpu", limit(uint64(s.GetCpuPercent()), func(v uint64) string { return fmt.Sprintf("%d%% of a CPU", v) }))
	names := make([]string, 0, len(s.GetEnv()))
	for k := range s.GetEnv() {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		// Quoted: a value with a newline or a quote shows as the one
		// value it is (strconv.Quote also escapes what printable does).
		writeRow(tw, "  env."+k, strconv.Quote(s.GetEnv()[k]))
	}
	return tw.Flush()
}
