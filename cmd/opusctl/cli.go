package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/opus-hosting/opus/client"
	"github.com/opus-hosting/opus/internal/config"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the server refused, an operation failed, I/O failed
	exitUsage = 2 // the command line is wrong
)

// env is everything opusctl touches outside itself, so the whole command
// tree runs in-process in tests: standard streams (a terminal when they are
// an *os.File on one), the environment and how to reach opusd.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	dial           func(ctx context.Context, socket string) (*client.Client, error)
}

// usageError is a mistake on the command line: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// run executes one opusctl command line and returns the exit code. Errors
// go to stderr as "opusctl: MESSAGE", with the server's own message for a
// gRPC error.
func run(ctx context.Context, args []string, e env) int {
	cmd := newRootCommand(e)
	cmd.SetArgs(args)
	failed, err := cmd.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	// A server's message may carry what a tenant wrote (a failed
	// migration's output, log lines): escaped, with its lines kept.
	var v verdictError
	if errors.As(err, &v) {
		// opusctl's own verdict goes on a line of its own at column 0,
		// where no relayed line is (printableLines indents them): a
		// tenant's output cannot forge it.
		fmt.Fprintf(e.stderr, "opusctl: %s\n%s\n", printableLines(errorMessage(v.err)), v.verdict)
	} else {
		fmt.Fprintf(e.stderr, "opusctl: %s\n", printableLines(errorMessage(err)))
	}
	code := exitCode(err)
	if code == exitUsage {
		path := "opusctl"
		if failed != nil {
			path = failed.CommandPath()
		}
		fmt.Fprintf(e.stderr, "Run '%s --help' for usage.\n", path)
	}
	return code
}

// exitCode is the exit status for a command's error, decided here only:
// 2 for every mistake in what was given, whether opusctl found it or
// opusd did (InvalidArgument: a bad name, URL, setting, certificate);
// 1 for everything else: a failed operation, a refusal for the state
// things are in (a project that does not exist or already exists, a
// permission), opusd not reachable.
func exitCode(err error) int {
	if isUsage(err) || status.Code(err) == codes.InvalidArgument {
		return exitUsage
	}
	return exitError
}

// isUsage reports whether err is a command-line mistake, including the
// ones cobra makes itself.
func isUsage(err error) bool {
	var ue usageError
	if errors.As(err, &ue) {
		return true
	}
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "required flag"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// errorMessage is err for a person: a gRPC status anywhere in the chain is
// replaced by its message alone (no "rpc error: code = ... desc =").
func errorMessage(err error) string {
	var se interface {
		error
		GRPCStatus() *status.Status
	}
	if errors.As(err, &se) {
		return strings.Replace(err.Error(), se.Error(), se.GRPCStatus().Message(), 1)
	}
	return err.Error()
}

// cli holds the global flags and env for the commands.
type cli struct {
	env
	socket  string
	output  string
	wait    bool
	noWait  bool
	timeout time.Duration
}

// terminal returns the file descriptor of x when it is a terminal.
func terminal(x any) (int, bool) {
	f, ok := x.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return -1, false
	}
	return int(f.Fd()), true
}

// newRootCommand builds the whole command tree on e.
func newRootCommand(e env) *cobra.Command {
	c := &cli{env: e}
	defSocket := e.getenv(client.SocketEnv)
	if defSocket == "" {
		defSocket = config.Default().OpusdSocket()
	}
	root := &cobra.Command{
		Use:   "opusctl",
		Short: "Deploy and manage Django projects on this host",
		Long: `opusctl talks to opusd, which deploys Django projects onto Apache and
mod_wsgi: each project gets its own Linux user, its own backend (an Apache
and mod_wsgi daemon of its own, running its code as that user), secrets, a
TLS certificate and a virtual host on the front Apache, named NAME and the
host's server_suffix (NAME.opus.localhost by default).

You are who your Unix user is: opusd reads your uid from its socket, so there
is nothing to log in to. You see and change your own projects; members of the
admin group and root see all.

Changes (create, destroy, apps, set, cert) return an operation; opusctl follows it
and shows each step until it ends, unless --no-wait is given, in which case it
prints the operation id for 'opusctl wait'. An operation that fails leaves the
project's previous working state serving and makes opusctl exit with status 1.

Exit status: 0 when the command did what it says; 2 when what was given is
wrong, whether opusctl or opusd found it (a flag, an argument, a name, URL,
setting or certificate opusd refuses); 1 for everything else: a change that
failed, a refusal for the state things are in (no such project, a name
already taken, not yours), opusd not reachable.`,
		Example: `  opusctl create blog --app ./polls --admin --superuser admin --superuser-email me@example.com
  opusctl ls
  opusctl show blog -o json
  opusctl apps update blog polls v1.3
  opusctl apps rollback blog polls
  opusctl set blog debug=true hosts=www.example.com
  opusctl destroy blog --yes`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if c.output != outputTable && c.output != outputJSON {
				return usagef("--output must be %q or %q, not %q", outputTable, outputJSON, c.output)
			}
			if c.timeout < 0 {
				return usagef("--timeout must not be negative")
			}
			return nil
		},
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetIn(e.stdin)
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	pf := root.PersistentFlags()
	pf.StringVar(&c.socket, "socket", defSocket, "path of opusd's socket; $"+client.SocketEnv+" sets the default")
	pf.StringVarP(&c.output, "output", "o", outputTable, "output format of read commands and of the final operation: table or json")
	pf.BoolVar(&c.wait, "wait", true, "follow a change until its operation ends, showing each step")
	pf.BoolVar(&c.noWait, "no-wait", false, "do not follow a change: print its operation id and return at once")
	pf.DurationVar(&c.timeout, "timeout", 15*time.Minute, "give up after this long (0 means never); an operation goes on in opusd regardless")

	root.AddCommand(
		c.createCommand(),
		c.lsCommand(),
		c.showCommand(),
		c.destroyCommand(),
		c.waitCommand(),
		c.opsCommand(),
		c.logsCommand(),
		c.appsCommand(),
		c.setCommand(),
		c.certCommand(),
		c.webCommand(),
		c.doctorCommand(),
		c.backupCommand(),
		c.restoreCommand(),
		c.dfCommand(),
		c.hostsCommand(),
		c.moveCommand(),
		c.completionCommand(root),
		c.versionCommand(),
	)
	// Every positional-argument mistake is a usage error, which shows
	// the arguments the command takes: cobra's "accepts 1 arg(s),
	// received 0" does not say which.
	var wrapArgs func(*cobra.Command)
	wrapArgs = func(cmd *cobra.Command) {
		if check := cmd.Args; check != nil {
			cmd.Args = func(cmd *cobra.Command, args []string) error {
				if err := check(cmd, args); err != nil {
					return usageError{fmt.Errorf("%w (usage: %s)", err, cmd.UseLine())}
				}
				return nil
			}
		}
		for _, sub := range cmd.Commands() {
			wrapArgs(sub)
		}
	}
	wrapArgs(root)
	return root
}

// withClient runs f with a connection to opusd, under the command's
// context with --timeout applied, and closes the connection after.
func (c *cli) withClient(cmd *cobra.Command, f func(context.Context, *client.Client) error) error {
	return c.connect(cmd, true, f)
}

// connect is withClient applying --timeout only when timeout is true (a
// follow ends on an interrupt, not at the default meant for operations).
func (c *cli) connect(cmd *cobra.Command, timeout bool, f func(context.Context, *client.Client) error) error {
	ctx := cmd.Context()
	if timeout && c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	cl, err := c.dial(ctx, c.socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	return f(ctx, cl)
}

// shouldWait says whether a change is followed to its end.
func (c *cli) shouldWait() bool { return c.wait && !c.noWait }

// progressOut is where progress goes: stdout, except with -o json, where
// stdout carries only the JSON, and with --no-wait, where it carries only
// the operation's id (op=$(opusctl create ... --no-wait)).
func (c *cli) progressOut() io.Writer {
	if c.output == outputJSON || !c.shouldWait() {
		return c.stderr
	}
	return c.stdout
}

// change runs a mutation: start it, then follow the operation (or print
// its id with --no-wait). showURLs prints the project's URLs at the end.
func (c *cli) change(ctx context.Context, cl *client.Client, title string, showURLs bool, start func() (*opusv1.Operation, error)) error {
	op, err := start()
	if err != nil {
		return err
	}
	if !c.shouldWait() {
		if c.output == outputJSON {
			return writeJSON(c.stdout, op)
		}
		_, err := fmt.Fprintln(c.stdout, printable(op.GetId()))
		return err
	}
	return c.follow(ctx, cl, op, title, showURLs)
}

// follow shows an operation's progress until it ends.
func (c *cli) follow(ctx context.Context, cl *client.Client, op *opusv1.Operation, title string, showURLs bool) error {
	w := c.progressOut()
	_, tty := terminal(w)
	fmt.Fprintf(w, "%s (operation %s)\n", printable(title), printable(op.GetId()))
	p := newProgress(w, tty)
	final, err := cl.Wait(ctx, op.GetId(), p.update)
	p.close()
	if err != nil {
		var oe *client.OperationError
		if errors.As(err, &oe) {
			if c.output == outputJSON {
				writeJSON(c.stdout, final)
				return err
			}
			if after := afterFailure(ctx, cl, oe.Op); after != "" {
				return verdictError{err, after}
			}
			return err
		}
		if status.Code(err) == codes.NotFound && op.GetKind() == opusv1.OperationKind_OPERATION_KIND_DELETE {
			// opusd may forget a delete operation together with its
			// project; the project being gone is the success.
			if _, perr := cl.GetProject(ctx, op.GetProject()); status.Code(perr) == codes.NotFound {
				fmt.Fprintf(c.stdout, "Project %s is destroyed.\n", printable(op.GetProject()))
				return nil
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("stopped waiting for operation %s, which goes on in opusd; follow it with 'opusctl wait %s': %w", op.GetId(), op.GetId(), ctx.Err())
		}
		return err
	}
	if c.output == outputJSON {
		return writeJSON(c.stdout, final)
	}
	if !showURLs {
		fmt.Fprintf(c.stdout, "Done in %s.\n", opDuration(final))
		return nil
	}
	proj, err := cl.GetProject(ctx, final.GetProject())
	if err != nil {
		return fmt.Errorf("operation %s succeeded, but reading project %s failed: %w", final.GetId(), final.GetProject(), err)
	}
	fmt.Fprintf(c.stdout, "Project %s is %s (%s).", printable(proj.GetName()), strings.ToLower(phaseName(proj.GetPhase())), opDuration(final))
	if len(proj.GetUrls()) > 0 {
		fmt.Fprint(c.stdout, " It answers at:")
	}
	fmt.Fprintln(c.stdout)
	for _, u := range proj.GetUrls() {
		fmt.Fprintf(c.stdout, "  %s\n", printable(u))
	}
	return nil
}

func opDuration(op *opusv1.Operation) string {
	if op.GetCreateTime() == nil || op.GetEndTime() == nil {
		return "-"
	}
	return formatElapsed(op.GetEndTime().AsTime().Sub(op.GetCreateTime().AsTime()))
}

// completeProjects offers the caller's project names for completion.
func (c *cli) completeProjects(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
	defer cancel()
	cl, err := c.dial(ctx, c.socket)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer cl.Close()
	ps, err := cl.ListProjects(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, p := range ps {
		out = append(out, p.GetName())
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func (c *cli) completionCommand(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Long: `completion prints a script that makes your shell complete opusctl's
commands, flags and (by asking opusd) your project names.`,
		Example: `  # bash, for this session:
  source <(opusctl completion bash)
  # bash, for good:
  opusctl completion bash > /etc/bash_completion.d/opusctl
  # zsh:
  opusctl completion zsh > "${fpath[1]}/_opusctl"
  # fish:
  opusctl completion fish > ~/.config/fish/completions/opusctl.fish`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"bash", "zsh", "fish"},
		RunE: func(cmd *cobra.Command, args []string) error {
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(c.stdout, true)
			case "zsh":
				return root.GenZshCompletion(c.stdout)
			case "fish":
				return root.GenFishCompletion(c.stdout, true)
			}
			return usagef("unknown shell %q; choose bash, zsh or fish", args[0])
		},
	}
}

func (c *cli) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print opusctl's version",
		Long:    "version prints the version of this opusctl binary and the Go release it was built with.",
		Example: "  opusctl version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := version
			bi, ok := debug.ReadBuildInfo()
			if v == "" && ok {
				v = bi.Main.Version
			}
			if v == "" {
				v = "(devel)"
			}
			goVersion := "unknown"
			if ok {
				goVersion = bi.GoVersion
			}
			_, err := fmt.Fprintf(c.stdout, "opusctl %s (%s)\n", v, goVersion)
			return err
		},
	}
}

// requireFlags returns a usage error naming the flags of names that are
// not set.
func requireFlags(fs *pflag.FlagSet, names ...string) error {
	var missing []string
	for _, n := range names {
		if !fs.Changed(n) {
			missing = append(missing, "--"+n)
		}
	}
	if len(missing) > 0 {
		return usagef("%s must be given", strings.Join(missing, " and "))
	}
	return nil
}

// queryProject prints project name: as JSON with -o json, else by human.
func (c *cli) queryProject(cmd *cobra.Command, name string, human func(*opusv1.Project) error) error {
	return query(c, cmd, func(ctx context.Context, cl *client.Client) (*opusv1.Project, error) {
		return cl.GetProject(ctx, name)
	}, human)
}

// query is a read-only command's body: dial opusd, make one call and print
// its answer, as JSON with -o json and through human otherwise.
func query[R proto.Message](c *cli, cmd *cobra.Command, call func(context.Context, *client.Client) (R, error), human func(R) error) error {
	return c.withClient(cmd, func(ctx context.Context, cl *client.Client) error {
		res, err := call(ctx, cl)
		if err != nil {
			return err
		}
		if c.output == outputJSON {
			return writeJSON(c.stdout, res)
		}
		return human(res)
	})
}

// verdictError is a failed operation's error with what opusctl concludes
// of it (afterFailure), which run prints apart from the relayed text.
type verdictError struct {
	err     error
	verdict string
}

func (e verdictError) Error() string { return e.err.Error() + "\n" + e.verdict }
func (e verdictError) Unwrap() error { return e.err }

// afterFailure says what a failed operation left, as opusd reports it: a
// change is undone whole and a failed create (or restore as a new
// project) leaves no project. Empty
// when neither is known (undoing failed too, or opusd is gone).
func afterFailure(ctx context.Context, cl *client.Client, op *opusv1.Operation) string {
	name := printable(op.GetProject())
	p, err := cl.GetProject(ctx, op.GetProject())
	switch {
	case status.Code(err) == codes.NotFound && (op.GetKind() == opusv1.OperationKind_OPERATION_KIND_CREATE || op.GetKind() == opusv1.OperationKind_OPERATION_KIND_RESTORE):
		return fmt.Sprintf("Nothing of project %s was kept: correct the cause and run the same command again.", name)
	case err == nil && p.GetLastFailedOperation() == op.GetId() && p.GetPhase() == opusv1.Phase_PHASE_READY:
		return fmt.Sprintf("Nothing of the change was applied: project %s serves what it served before.", name)
	}
	return ""
}
