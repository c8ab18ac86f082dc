package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

func (c *cli) logsCommand() *cobra.Command {
	var (
		lines  int
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a project's recent error log lines, or follow its log",
		Long: `logs prints the last lines of the project's own Apache and mod_wsgi error
log: tracebacks of the Django code, failed requests, daemon restarts. When
the log has no lines yet, it says so (with -o json: an empty list).

With -f (--follow) it then goes on printing each line appended to the log, as
it comes (within about a second), until interrupted (Ctrl-C: exit status 0).
With -o json it then prints one JSON object per log line, {"line": "..."},
and nothing when the log is empty. --timeout stops following only when given.`,
		Example: `  opusctl logs blog
  opusctl logs blog -n 500
  opusctl logs blog -f
  opusctl logs blog -f -n 0 -o json | jq -r .line`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			if lines < 0 || lines > 1000 {
				return usagef("-n must be 0 to 1000")
			}
			if follow {
				return c.followLogs(cmd, args[0], lines)
			}
			return query(c, cmd, func(ctx context.Context, cl *client.Client) (*opusv1.GetLogsResponse, error) {
				return cl.RPC().GetLogs(ctx, &opusv1.GetLogsRequest{Project: args[0], Lines: int32(lines)})
			}, func(resp *opusv1.GetLogsResponse) error {
				if len(resp.GetLines()) == 0 {
					_, err := fmt.Fprintf(c.stdout, "The error log of project %s is empty so far.\n", printable(args[0]))
					return err
				}
				return c.writeLogLines(resp.GetLines())
			})
		},
	}
	cmd.Flags().IntVarP(&lines, "lines", "n", 0, "how many of the last lines (0: the server's default, 100; at most 1000)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing lines as they are appended, until interrupted")
	return cmd
}

// followLogs prints the project's last lines and then the new ones until
// the command's context ends (an interrupt), which is success. --timeout's
// default, meant for operations, does not end a follow: a given one does.
func (c *cli) followLogs(cmd *cobra.Command, project string, lines int) error {
	return c.connect(cmd, cmd.Flags().Changed("timeout"), func(ctx context.Context, cl *client.Client) error {
		stream, err := cl.RPC().FollowLogs(ctx, &opusv1.FollowLogsRequest{Project: project, Lines: int32(lines)})
		for first := true; err == nil; first = false {
			var msg *opusv1.FollowLogsResponse
			if msg, err = stream.Recv(); err != nil {
				break
			}
			// The first answer is the tail, sent even when empty: say so,
			// as logs without -f does, or a follow of an empty log looks
			// hung.
			if first && len(msg.GetLines()) == 0 && c.output != outputJSON {
				_, err = fmt.Fprintf(c.stdout, "The error log of project %s is empty so far; waiting for new lines (Ctrl-C to stop).\n", printable(project))
				continue
			}
			err = c.writeLogLines(msg.GetLines())
		}
		if ctx.Err() != nil && (status.Code(err) == codes.Canceled || status.Code(err) == codes.DeadlineExceeded) {
			return nil
		}
		if errors.Is(err, io.EOF) { // opusd ended the stream (it is shutting down)
			return errors.New("opusd stopped sending the log; run the command again to go on following it")
		}
		return err
	})
}

// writeLogLines prints log lines: each escaped on a line of its own, or
// with -o json one JSON object per line.
func (c *cli) writeLogLines(lines []string) error {
	if c.output == outputJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetEscapeHTML(false)
		for _, l := range lines {
			if err := enc.Encode(struct {
				Line string `json:"line"`
			}{l}); err != nil {
				return err
			}
		}
		return nil
	}
	// A log line is whatever the project's code wrote: escaped, it can
	// neither drive the terminal nor pass for more than the one line it is.
	for _, l := range lines {
		if _, err := fmt.Fprintln(c.stdout, printable(l)); err != nil {
			return err
		}
	}
	return nil
}
