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
  opusctl web disable alice     # admins
  opusctl web delete alice      # admins`,
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
stdin with --password-stdin. opusd keeps only a slow salted hash of it.
Every console session of yours ends: sign in again with the new password.`,
		Example: `  opusctl web passwd
  printf '%s\n' "$PW" | opusctl web passwd --password-stdin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pw, err := c.readConsolePassword(fromStdin)
			if err != nil {
				return err
			}
			return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
				if _, err := cl.RPC().SetConsolePassword(ctx, &opusv1.SetConsolePasswordRequest{Password: pw}); err != nil {
					return err
				}
				fmt.Fprintln(c.stderr, "Console password set.")
				return nil
			})
		},
	}
	passwd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of stdin instead of prompting")
	accounts := &cobra.Command{
		Use:   "accounts",
		Short: "List web console accounts (admins)",
		Long: `accounts lists the users who have a web console account (made by their first
login link or password): whether they set a password, whether an admin
disabled them, and when they last signed in. An account belongs to its Unix
user: once the user is deleted (or their uid is given to someone else), it
is deleted and no longer listed. Only root and members of the admin group
may list them.`,
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
			what := "disabled"
			if enable {
				what = "enabled"
			}
			return c.accountCall(cmd, args[0], what, func(ctx context.Context, rpc opusv1.OpusClient, uid uint32) error {
				_, err := rpc.DisableConsoleAccount(ctx, &opusv1.DisableConsoleAccountRequest{Uid: uid, Enable: enable})
				return err
			})
		},
	}
	disable.Flags().BoolVar(&enable, "enable", false, "re-enable the account instead")
	// No confirmation flag: deleting an account loses no project or data,
	// only what the user can make again (a password, a session); destroy's
	// --yes guards what cannot be made again.
	del := &cobra.Command{
		Use:   "delete UID|USER",
		Short: "Delete a web console account (admins)",
		Long: `delete removes a user's web console account: its password, login links and
sessions end at once. It does not touch their projects or their use of
opusctl, and the user may make a new account (web login, web passwd): to
keep someone out, use 'web disable' instead.

Accounts whose Unix user was deleted (or whose uid now belongs to another
user) are removed by opusd on their next use or listing; give such an
account's uid, as 'web accounts' shows it.`,
		Example: `  opusctl web delete alice
  opusctl web delete 1001`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.accountCall(cmd, args[0], "deleted", func(ctx context.Context, rpc opusv1.OpusClient, uid uint32) error {
				_, err := rpc.DeleteConsoleAccount(ctx, &opusv1.DeleteConsoleAccountRequest{Uid: uid})
				return err
			})
		},
	}
	cmd.AddCommand(login, passwd, accounts, disable, del)
	return cmd
}

// accountCall makes one admin call on the console account of who (a uid
// or a user name) and says what was done.
func (c *cli) accountCall(cmd *cobra.Command, who, done string, call func(context.Context, opusv1.OpusClient, uint32) error) error {
	uid, err := parseUID(who)
	if err != nil {
		return err
	}
	return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
		if err := call(ctx, cl.RPC(), uid); err != nil {
			return err
		}
		fmt.Fprintf(c.stderr, "Console account of %s (uid %d) %s.\n", printable(userName(uid)), uid, done)
		return nil
	})
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
