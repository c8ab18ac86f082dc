package main

import (
	"context"
	"fmt"
	"os/user"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

func (c *cli) webCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "web",
		Short: "Sign in to the web console; manage console accounts",
		Long: `web is about opusd's web console, where you deploy and manage your projects
in a browser. There, as here, you are your Unix user: you see your own
projects, admins see all. Sign in with a one-time link ('web login') or with
a console password you set yourself ('web passwd').`,
		Example: `  opusctl web login
  opusctl web passwd
  opusctl web accounts          # admins
  opusctl web disable alice     # admins`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	login := &cobra.Command{
		Use:   "login",
		Short: "Print a one-time link that signs you in to the web console",
		Long: `login prints a link that signs you in to the web console as your Unix user.
It works once, within five minutes. Anyone holding it can use it: open it
yourself, do not share it.`,
		Example: `  opusctl web login
  opusctl web login -o json   # the link and its expiry time`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return query(c, cmd, func(ctx context.Context, cl *client.Client) (*opusv1.CreateLoginLinkResponse, error) {
				return cl.RPC().CreateLoginLink(ctx, &opusv1.CreateLoginLinkRequest{})
			}, func(res *opusv1.CreateLoginLinkResponse) error {
				fmt.Fprintln(c.stdout, printable(res.GetUrl()))
				fmt.Fprintf(c.stderr, "Open this link to sign in (once, until %s).\n", formatTime(res.GetExpireTime()))
				return nil
			})
		},
	}
	var fromStdin bool
	passwd := &cobra.Command{
		Use:   "passwd",
		Short: "Set your own web console password",
		Long: `passwd sets the password you sign in to the web console with, as your Unix
user. It is asked twice on the terminal, or read from the first line of
stdin with --password-stdin. opusd keeps only a slow salted hash of it.`,
		Example: `  opusctl web passwd
  printf '%s\n' "$PW" | opusctl web passwd --password-stdin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pw, err := c.readConsolePassword(fromStdin)
			if err != nil {
				return err
			}
			ctx, cl, done, err := c.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			if _, err := cl.RPC().SetConsolePassword(ctx, &opusv1.SetConsolePasswordRequest{Password: pw}); err != nil {
				return err
			}
			fmt.Fprintln(c.stderr, "Console password set.")
			return nil
		},
	}
	passwd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of stdin instead of prompting")
	accounts := &cobra.Command{
		Use:   "accounts",
		Short: "List web console accounts (admins)",
		Long: `accounts lists the users who have a web console account (made by their first
login link or password): whether they set a password, whether an admin
disabled them, and when they last signed in. Only root and members of the
admin group may list them.`,
		Example: `  opusctl web accounts
  opusctl web accounts -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return query(c, cmd, func(ctx context.Context, cl *client.Client) (*opusv1.ListConsoleAccountsResponse, error) {
				return cl.RPC().ListConsoleAccounts(ctx, &opusv1.ListConsoleAccountsRequest{})
			}, func(res *opusv1.ListConsoleAccountsResponse) error {
				tw := newTable(c.stdout)
				writeRow(tw, "UID", "USER", "PASSWORD", "DISABLED", "LAST SIGN-IN")
				for _, a := range res.GetAccounts() {
					writeRow(tw, strconv.FormatUint(uint64(a.GetUid()), 10), orDash(a.GetUser()), yesNo(a.GetHasPassword()), yesNo(a.GetDisabled()), formatTime(a.GetLastSignIn()))
				}
				return tw.Flush()
			})
		},
	}
	var enable bool
	disable := &cobra.Command{
		Use:   "disable UID|USER",
		Short: "Disable a web console account (admins)",
		Long: `disable keeps a user out of the web console: their sessions end at once and
neither links nor their password sign them in. --enable lets them in again.
It does not touch their projects or their use of opusctl.`,
		Example: `  opusctl web disable alice
  opusctl web disable 1001 --enable`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			uid, err := parseUID(args[0])
			if err != nil {
				return err
			}
			ctx, cl, done, err := c.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			if _, err := cl.RPC().DisableConsoleAccount(ctx, &opusv1.DisableConsoleAccountRequest{Uid: uid, Enable: enable}); err != nil {
				return err
			}
			what := "disabled"
			if enable {
				what = "enabled"
			}
			fmt.Fprintf(c.stderr, "Console account of %s (uid %d) %s.\n", printable(userName(uid)), uid, what)
			return nil
		},
	}
	disable.Flags().BoolVar(&enable, "enable", false, "re-enable the account instead")
	cmd.AddCommand(login, passwd, accounts, disable)
	return cmd
}

// parseUID takes a uid or a user name.
func parseUID(s string) (uint32, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		return 0, usagef("%q is neither a uid nor a known user", s)
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("user %s has uid %q: %w", s, u.Uid, err)
	}
	return uint32(n), nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// readConsolePassword reads the new console password: the first line of
// stdin, or asked twice without echo on the terminal. Never from argv.
func (c *cli) readConsolePassword(fromStdin bool) (string, error) {
	return c.readSecret(fromStdin, passwordPrompt{
		stdinFlag:  "--password-stdin",
		noTerminal: "run on a terminal to be prompted, or pipe the password in with --password-stdin",
		ask:        "New console password: ",
		again:      "Repeat it: ",
	})
}
