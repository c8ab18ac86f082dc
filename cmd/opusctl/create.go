package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/opus-hosting/opus/client"
	"github.com/opus-hosting/opus/internal/names"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// maxPassword bounds a password read from stdin (opusd refuses longer
// ones anyway).
const maxPassword = 1024

func (c *cli) createCommand() *cobra.Command {
	var (
		apps          []string
		empty         bool
		admin         bool
		superuser     string
		email         string
		passwordStdin bool
		database      string
		dbPassword    string
		host          string
	)
	cmd := &cobra.Command{
		Use:   "create NAME (--app [APP=]SRC[@REF]... | --empty)",
		Short: "Create and deploy a project",
		Long: `create records a new project owned by you and deploys it: a Linux user,
the rendered Django project with its apps, its backend (an Apache and
mod_wsgi daemon of its own), migrations, an optional Django superuser, a
self-signed TLS certificate and a virtual host on the front, named NAME and
the host's server_suffix (NAME.opus.localhost by default). At the end it
prints the URLs where the project answers.

NAME is 1 to 24 lowercase letters and digits, starting with a letter.
Give at least one --app, or --empty for a project with no apps yet (add them
later with 'opusctl apps add').

` + sourceHelp + `

The superuser's password is never taken from the command line (where other
users could read it): on a terminal you are prompted for it without echo;
otherwise pipe it in and pass --superuser-password-stdin.

` + databaseHelp,
		Example: `  # an app from a local directory (uploaded) and one from git at a tag:
  opusctl create blog --app ./polls --app https://git.example.com/news.git@v2.1
  # no apps yet:
  opusctl create blog --empty
  # name the app explicitly, mount /admin/ and create a superuser (prompted):
  opusctl create blog --app polls=./src/polls --admin --superuser admin --superuser-email me@example.com
  # non-interactive:
  printf '%s\n' "$PW" | opusctl create blog --app ./polls --admin \
      --superuser admin --superuser-email me@example.com --superuser-password-stdin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkProjectName(name); err != nil {
				return err
			}
			srcs, err := parseSources(apps)
			if err != nil {
				return err
			}
			// An empty project is deployed (user, backend, host name), so
			// it is asked for, not what a forgotten --app gives.
			switch {
			case len(srcs) == 0 && !empty:
				return usagef("no apps given: give --app SRC (repeatable), or --empty to create a project with no apps")
			case len(srcs) > 0 && empty:
				return usagef("--empty creates a project with no apps; leave it out to deploy the --app given")
			}
			if email != "" && superuser == "" {
				return usagef("--superuser-email needs --superuser")
			}
			if superuser != "" {
				// Before the password prompt and before anything is made:
				// createsuperuser would refuse it only after the migrations.
				if err := names.ValidateSuperuserEmail(email); err != nil {
					return usagef("--superuser-email: %w", err)
				}
			}
			if passwordStdin && superuser == "" {
				return usagef("--superuser-password-stdin needs --superuser")
			}
			req := &opusv1.CreateProjectRequest{Name: name, Admin: admin, Host: host}
			if dbPassword != "" && database == "" {
				return usagef("--database-password-file needs --database")
			}
			if database != "" {
				if req.Database, err = parseDatabase(database); err != nil {
					return err
				}
				if dbPassword != "" {
					if req.Database.Password, err = readDatabasePassword(dbPassword); err != nil {
						return err
					}
				}
			}
			if superuser != "" {
				pw, err := c.readPassword(passwordStdin, superuser)
				if err != nil {
					return err
				}
				req.Superuser = &opusv1.Superuser{Username: superuser, Email: email, Password: pw}
			}
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				for _, s := range srcs {
					spec, err := c.appSpec(ctx, cl, s)
					if err != nil {
						return err
					}
					req.Apps = append(req.Apps, spec)
				}
				return c.change(ctx, cl, "Creating project "+name, true, func() (*opusv1.Operation, error) {
					return cl.CreateProject(ctx, req)
				})
			})
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&apps, "app", nil, "an app to deploy, as [APP=]SRC[@REF] (repeatable; see SRC above)")
	f.BoolVar(&empty, "empty", false, "create the project with no apps (add them later with 'opusctl apps add')")
	f.BoolVar(&admin, "admin", false, "mount Django's admin at /admin/")
	f.StringVar(&host, "host", "", "put the project on this host (see 'opusctl hosts'; default: the live host with the most room)")
	f.StringVar(&superuser, "superuser", "", "create a Django superuser with this user name on first deploy")
	f.StringVar(&email, "superuser-email", "", "the superuser's e-mail address (required with --superuser: Django's createsuperuser needs one)")
	f.BoolVar(&passwordStdin, "superuser-password-stdin", false, "read the superuser's password from the first line of stdin instead of prompting")
	f.StringVar(&database, "database", "", "keep the data in PostgreSQL: postgresql://USER@HOST[:PORT]/NAME, or \"provision\" to have Opus make a database (default: SQLite)")
	f.StringVar(&dbPassword, "database-password-file", "", "read the --database role's password from the first line of this file")
	return cmd
}

// parseSources parses every --app, refusing two apps of one name.
func parseSources(args []string) ([]appSource, error) {
	var out []appSource
	seen := map[string]bool{}
	for _, a := range args {
		s, err := parseSource(a, os.Stat)
		if err != nil {
			return nil, usageError{err}
		}
		if seen[s.name] {
			return nil, usagef("two apps are named %q; name one with --app NAME=SRC", s.name)
		}
		seen[s.name] = true
		out = append(out, s)
	}
	return out, nil
}

// appSpec turns a parsed source into an AppSpec, uploading a plain
// directory first.
func (c *cli) appSpec(ctx context.Context, cl *client.Client, s appSource) (*opusv1.AppSpec, error) {
	if s.git {
		return &opusv1.AppSpec{Name: s.name, Source: client.GitSource(s.location, s.ref)}, nil
	}
	fmt.Fprintf(c.progressOut(), "Uploading %s from %s\n", printable(s.name), printable(s.location))
	digest, err := cl.UploadDir(ctx, s.location)
	if err != nil {
		return nil, fmt.Errorf("upload app %s: %w", s.name, err)
	}
	return &opusv1.AppSpec{Name: s.name, Source: client.UploadedSource(digest, s.location)}, nil
}

// readPassword gets the superuser's password: from the first line of stdin
// with --superuser-password-stdin, else by a prompt without echo on the
// terminal, asked twice. It never comes from argv.
func (c *cli) readPassword(fromStdin bool, user string) (string, error) {
	return c.readSecret(fromStdin, passwordPrompt{
		stdinFlag:  "--superuser-password-stdin",
		noTerminal: fmt.Sprintf("--superuser %s needs a password: run on a terminal to be prompted, or pipe it in with --superuser-password-stdin", user),
		ask:        fmt.Sprintf("Password for superuser %s: ", user),
		again:      "Repeat the password: ",
		emptyErr:   errors.New("the superuser's password must not be empty"),
	})
}

// passwordPrompt says how readSecret asks for a password.
type passwordPrompt struct {
	stdinFlag  string // the flag that reads it from stdin, for messages
	noTerminal string // what to do instead when stdin is no terminal
	ask, again string // the two prompts
	emptyErr   error  // the answer to an empty typed password; nil accepts it
}

// readSecret reads a password: the first line of stdin when fromStdin (at
// most maxPassword bytes), else asked twice without echo on the terminal.
// Never from argv, where other users could read it.
func (c *cli) readSecret(fromStdin bool, p passwordPrompt) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(io.LimitReader(c.stdin, maxPassword+1)).ReadString('\n')
		if err != nil && err != io.EOF {
			return "", fmt.Errorf("read password from stdin: %w", err)
		}
		if len(line) > maxPassword {
			return "", fmt.Errorf("the password on stdin is longer than %d bytes", maxPassword)
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", usagef("%s: stdin holds no password", p.stdinFlag)
		}
		return pw, nil
	}
	fd, ok := terminal(c.stdin)
	if !ok {
		return "", usagef("%s", p.noTerminal)
	}
	ask := func(prompt string) (string, error) {
		fmt.Fprint(c.stderr, prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(c.stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return string(b), nil
	}
	pw, err := ask(p.ask)
	if err != nil {
		return "", err
	}
	if pw == "" && p.emptyErr != nil {
		return "", p.emptyErr
	}
	again, err := ask(p.again)
	if err != nil {
		return "", err
	}
	if again != pw {
		return "", fmt.Errorf("the passwords do not match")
	}
	return pw, nil
}

// checkProjectName is create's early check of a new project's name: the
// server's own rule, refused as a usage error before anything is sent.
func checkProjectName(name string) error {
	if err := names.ValidateProject(name); err != nil {
		return usageError{err}
	}
	return nil
}
