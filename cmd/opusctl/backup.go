package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/opus-hosting/opus/client"
	"github.com/opus-hosting/opus/internal/datasize"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

func (c *cli) backupCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "backup NAME -o FILE",
		Short: "Write a backup of a project to a file",
		Long: `backup writes everything needed to bring project NAME back, on this host or
another, to FILE (a gzipped tar; - writes to stdout): its apps at the
revisions that run (a git URL and commit, or the uploaded archive itself),
its settings, its secrets (SECRET_KEY, a database password you gave), a
consistent copy of its database (SQLite, or pg_dump's custom format) and its
media files.

The file is as sensitive as the project's secrets: it is created readable by
you alone (0600). It is written whole or not at all, and an existing FILE is
never overwritten. Only the project's owner and admins can back it up.

A link, FIFO or device in the project's media directory fails the backup with
its name: a backup copies regular files and directories only.

Bring it back with 'opusctl restore FILE'.`,
		Example: `  opusctl backup blog -o blog-2026-12-05.opus
  opusctl backup blog -o - | ssh other-host opusctl restore -`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeProjects,
		// -o is the file here, not the output format: backup's own flag,
		// which hides the global one, so that its help says so.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if c.timeout < 0 {
				return usagef("--timeout must not be negative")
			}
			if file == "" {
				return usagef("say where the backup goes: -o FILE (- for stdout)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				if file == "-" {
					_, err := cl.Backup(ctx, name, c.stdout)
					return err
				}
				n, err := writeNew(file, func(w io.Writer) (int64, error) { return cl.Backup(ctx, name, w) })
				if err != nil {
					return err
				}
				fmt.Fprintf(c.stderr, "Project %s backed up to %s (%s).\n", printable(name), printable(file), datasize.Text(n))
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&file, "output", "o", "", "write the backup to `FILE` (required): a new file, never overwritten; - for stdout")
	return cmd
}

// writeNew writes file (mode 0600, which must not exist) whole or not at
// all: fill writes into a temporary file beside it, renamed into place
// once complete.
func writeNew(file string, fill func(io.Writer) (int64, error)) (int64, error) {
	if _, err := os.Lstat(file); err == nil {
		return 0, usagef("%s exists; give a new file name (a backup never overwrites one)", file)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".partial-*")
	if err != nil {
		// Name the file asked for, not the temporary one beside it.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return 0, fmt.Errorf("cannot write %s: %w", file, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return 0, err
	}
	n, err := fill(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	// Link, not rename: a FILE made meanwhile is not overwritten.
	if err := os.Link(tmp.Name(), file); err != nil {
		return 0, err
	}
	return n, nil
}

func (c *cli) restoreCommand() *cobra.Command {
	var as, owner string
	var replace, takeOver bool
	cmd := &cobra.Command{
		Use:   "restore FILE [--as NEWNAME] [--replace [--take-over]] [--owner USER]",
		Short: "Make a project from a backup",
		Long: `restore brings back the project in FILE (written by 'opusctl backup'; - reads
stdin), on this host or another: the same apps at the same revisions, settings,
secret key, database and media files. opusd checks the whole file before it
changes anything; a damaged or foreign file is refused with nothing changed.

The project keeps its name unless --as gives another, so a backup can be
restored beside the project it came from. It is yours (an admin may give it to
another user with --owner); its Linux user, paths and certificate are this
host's, whatever host the backup came from.

If a project of that name exists, restore refuses unless --replace is given:
then the existing project (yours) gets the backup's apps, settings, secret key,
database and media. This is how to bring back a project whose deploy failed or
whose data was damaged. A restore is all or nothing: if it fails, a new
project is removed again, and a replaced one is put back as it was (its code,
settings, database and media), as for any failed change.

With several hosts (README: "Scaling past one host"), --replace works on the
host that serves the project. When that host is not answering (the project is
UNREACHABLE), --replace --take-over restores it here instead: this host deploys
its copy from the backup while the project keeps its record, and once the copy
answers it is the project, here; the old host removes its own copy when it is
back. If the copy fails, the project stays as it was.

Upgrading Opus or your apps? Back up first; if the upgrade goes wrong,
'opusctl restore FILE --replace' brings the project back.`,
		Example: `  opusctl restore blog-2026-12-05.opus
  opusctl restore blog-2026-12-05.opus --as blog_copy
  opusctl restore blog-2026-12-05.opus --replace
  opusctl restore blog-2026-12-05.opus --replace --take-over   # its host is down`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if takeOver && !replace {
				return usagef("--take-over restores over the project: give --replace too")
			}
			info := &opusv1.RestoreInfo{Name: as, Replace: replace, TakeOver: takeOver}
			if owner != "" {
				uid, err := lookupUID(owner)
				if err != nil {
					return usagef("--owner: %v", err)
				}
				info.OwnerUid = uid
			}
			var in io.Reader = c.stdin
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				return c.change(ctx, cl, "Restoring from "+args[0], true, func() (*opusv1.Operation, error) {
					return cl.Restore(ctx, info, in)
				})
			})
		},
	}
	cmd.Flags().StringVar(&as, "as", "", "restore under this name instead of the backup's")
	cmd.Flags().BoolVar(&replace, "replace", false, "restore over an existing project of yours of that name (all or nothing)")
	cmd.Flags().BoolVar(&takeOver, "take-over", false, "with --replace: restore a project whose host is not answering on this host instead")
	cmd.Flags().StringVar(&owner, "owner", "", "make USER (a name or uid) the owner (admins only)")
	return cmd
}

// lookupUID is a user name's or number's uid.
func lookupUID(s string) (uint32, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(n), err
}
