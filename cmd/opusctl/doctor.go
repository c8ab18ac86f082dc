package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// errDrift makes doctor exit with status 1 after it printed the drift.
var errDrift = errors.New("the host has drifted from opusd's state (see above)")

func (c *cli) doctorCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check that the host matches opusd's state (admins)",
		Long: `doctor asks opusd to compare its state with the host: project users that
carry the Opus marker, virtual hosts in opus-privd's site directory, the
projects' backends (missing, down, or of no project), project directories
and opusd's certificates. It prints every difference (a leftover no project
owns, or a part a deployed project lacks) and exits with status 1
when there is any, 0 when the host is clean. Only root and members of the
admin group may run it.

It also watches the project uid range (project_uids in opus.conf), which is
Opus's alone: an account in it that is no project's (kind "uid"), and
processes or files in /tmp, /var/tmp, /dev/shm and /run/lock of an id of the range that
no project has now, which a destroyed project left behind (kind
"leftover").`,
		Example: `  sudo opusctl doctor
  opusctl doctor -o json | jq '.drift[]'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				resp, err := cl.RPC().CheckHost(ctx, &opusv1.CheckHostRequest{})
				if err != nil {
					return err
				}
				if c.output == outputJSON {
					if err := writeJSON(c.stdout, resp); err != nil {
						return err
					}
				} else if len(resp.GetDrift()) == 0 {
					fmt.Fprintf(c.stdout, "No drift: the host matches opusd's state (%s checked).\n", count(int(resp.GetChecked()), "project", "projects"))
				} else {
					w := newTable(c.stdout)
					writeRow(w, "KIND", "PROJECT", "DETAIL")
					for _, d := range resp.GetDrift() {
						writeRow(w, d.GetKind(), orDash(d.GetProject()), d.GetDetail())
					}
					if err := w.Flush(); err != nil {
						return err
					}
					fmt.Fprintf(c.stdout, "%s (%s checked).\n", count(len(resp.GetDrift()), "difference", "differences"), count(int(resp.GetChecked()), "project", "projects"))
				}
				if len(resp.GetDrift()) > 0 {
					return errDrift
				}
				return nil
			})
		},
	}
}

// count is n with the noun for one or for many.
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
