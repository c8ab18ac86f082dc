// Package daemon is the lifecycle both Opus daemons share, so that they
// start, serve and stop by one set of rules: a command line whose flags
// override keys of the host configuration (internal/config), logging to
// the journal or stderr, the listener (the socket systemd passes, or the
// daemon's own, both guarded by internal/socklock), sd_notify, the
// watchdog, signals, and the drain at stop. What a daemon serves is its
// own business (unprivd/opusd, privd/opusprivd); this package knows
// nothing of it.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/journal"
)

// Exit statuses of Main.
const (
	ExitOK      = 0 // stopped by a signal, or --help
	ExitFailure = 1 // the configuration was refused, or the daemon failed
	ExitUsage   = 2 // a bad command line
)

// Command is a daemon's command line. Every daemon has --config and
// --log-level; the rest are declared with Key (a flag that sets one
// configuration key), PathVar (a path whose default comes from the
// configuration) and StringVar (a setting of the command line only).
type Command struct {
	name, about string
	fs          *flag.FlagSet
	configPath  string
	logLevel    string
	level       slog.Level
	keys        []keyFlag
	paths       []pathFlag

	// Run is the daemon proper. Main calls it once the command line and
	// the configuration are read; ctx ends at SIGTERM or SIGINT, its
	// cause naming the signal.
	Run func(ctx context.Context, d *Daemon) error
}

// keyFlag is a flag that sets configuration key when given.
type keyFlag struct {
	flag, key string
	value     *string
}

// pathFlag is a flag whose value, when not given, fromConfig derives from
// the configuration read.
type pathFlag struct {
	flag       string
	value      *string
	fromConfig func(config.Config) string
}

// Daemon is what a daemon's Run is given.
type Daemon struct {
	// Name is the command's name: the journal's SYSLOG_IDENTIFIER and
	// the subject of the lifecycle's messages ("opusd stopped").
	Name   string
	Log    *slog.Logger
	Config config.Config
}

// New returns the command line of the daemon name; about is the usage's
// one-line description of it.
func New(name, about string) *Command {
	c := &Command{name: name, about: about, fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	c.fs.StringVar(&c.configPath, "config", config.DefaultPath, "configuration `file` (a missing default file means built-in defaults; a file named here must exist)")
	c.fs.StringVar(&c.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	return c
}

// Key declares flag as setting the configuration key: when given, its
// value goes through config.Set, over the file; its default shown is the
// built-in default of the key. It panics for a key the configuration
// does not have (a programming error, caught by any test of the command).
func (c *Command) Key(flag, key, usage string) {
	def, ok := defaultOf(key)
	if !ok {
		panic("daemon: no configuration key " + key)
	}
	c.keys = append(c.keys, keyFlag{flag: flag, key: key, value: c.fs.String(flag, def, usage)})
}

// PathVar declares flag as a path stored in p: the flag's value when
// given, else fromConfig of the configuration read (the default shown is
// fromConfig of the built-in one).
func (c *Command) PathVar(p *string, flag string, fromConfig func(config.Config) string, usage string) {
	c.fs.StringVar(p, flag, fromConfig(config.Default()), usage)
	c.paths = append(c.paths, pathFlag{flag: flag, value: p, fromConfig: fromConfig})
}

// StringVar declares a flag of the command line only, stored in p.
func (c *Command) StringVar(p *string, flag, def, usage string) {
	c.fs.StringVar(p, flag, def, usage)
}

// defaultOf returns key's built-in default as opus.conf writes it.
func defaultOf(key string) (string, bool) {
	for _, line := range strings.Split(config.Default().Format(), "\n") {
		if k, v, _ := strings.Cut(line, " "); k == key {
			return v, true
		}
	}
	return "", false
}

// Parse reads the command line. After --help it returns flag.ErrHelp.
// The usage is printed on stderr after --help and before any other error
// the flag package finds; the error itself is only returned (Main says it
// once, last, where a reader looks).
func (c *Command) Parse(args []string, stderr io.Writer) error {
	// The flag package would print its errors too, above the usage.
	c.fs.SetOutput(io.Discard)
	c.fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s [flags]\n\n%s\nFlags override the configuration file.\n\n", c.name, c.about)
		c.fs.SetOutput(stderr)
		c.fs.PrintDefaults()
		c.fs.SetOutput(io.Discard)
	}
	if err := c.fs.Parse(args); err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", c.fs.Args())
	}
	if err := c.level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %q is not a log level; use debug, info, warn or error", c.logLevel)
	}
	return nil
}

// Config reads the configuration file, sets the keys of the flags given,
// validates the result, and resolves the path flags not given from it.
// The default file is optional (the daemon runs on the built-in
// defaults); one named by --config must exist: a typo must not run one
// daemon on other settings than the other's.
func (c *Command) Config() (config.Config, error) {
	given := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	cfg, err := config.Load(c.configPath, !given["config"])
	if err != nil {
		return cfg, err
	}
	for _, k := range c.keys {
		if given[k.flag] {
			if err := cfg.Set(k.key, *k.value); err != nil {
				return cfg, fmt.Errorf("--%s: %w", k.flag, err)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		// Name the flag that set the key refused: opusd's --state-dir
		// is base_dir, and a reader looks for what they typed.
		for _, k := range c.keys {
			if given[k.flag] && strings.HasPrefix(err.Error(), k.key+":") {
				return cfg, fmt.Errorf("--%s: %w", k.flag, err)
			}
		}
		return cfg, fmt.Errorf("configuration: %w", err)
	}
	for _, p := range c.paths {
		if !given[p.flag] {
			*p.value = p.fromConfig(cfg)
		}
	}
	return cfg, nil
}

// Main runs the daemon and returns its exit status. It reads the command
// line (ExitUsage when it is bad, ExitOK after --help), logs at
// --log-level to the journal when systemd connected stderr to it and as
// text on stderr otherwise, reads the configuration, and calls Run with a
// context that SIGTERM or SIGINT ends. A refused configuration or a
// failed Run is logged and ExitFailure.
func (c *Command) Main(args []string, stderr io.Writer) int {
	if err := c.Parse(args, stderr); errors.Is(err, flag.ErrHelp) {
		return ExitOK
	} else if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", c.name, err)
		return ExitUsage
	}
	d := &Daemon{Name: c.name, Log: slog.New(journal.ForDaemon(c.name, stderr, &slog.HandlerOptions{Level: c.level}))}
	slog.SetDefault(d.Log)
	if err := c.run(d); err != nil {
		d.Log.Error(c.name+" failed", "err", err)
		return ExitFailure
	}
	return ExitOK
}

func (c *Command) run(d *Daemon) error {
	cfg, err := c.Config()
	if err != nil {
		return err
	}
	d.Config = cfg
	ctx, stop := signalContext(context.Background())
	defer stop()
	return c.Run(ctx, d)
}

// SignalError is the cause of Run's context ending: the signal received.
type SignalError struct{ Signal os.Signal }

func (e SignalError) Error() string { return e.Signal.String() }

// signalContext returns a context that the first SIGTERM or SIGINT
// cancels with a SignalError; later ones are ignored until stop, which
// restores their default action.
func signalContext(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			cancel(SignalError{s})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel(context.Canceled)
	}
}
