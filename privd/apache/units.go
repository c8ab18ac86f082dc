package apache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"text/template"

	"github.com/opus-hosting/opus/internal/atomicfile"
	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/layout"
)

// UnitTemplate is the templated unit a backend runs as under systemd
// (systemd/opus-backend@.service).
const UnitTemplate = "opus-backend@.service"

// Units runs backends as instances of opus-backend@.service: in system
// mode on a host systemd runs, systemd starts each backend, restarts it
// when it dies, bounds it (MemoryMax=, TasksMax=, CPUQuota=) and sandboxes
// it, instead of privd (package confine, package cgroup, Supervise). privd
// writes each instance's drop-in, from its configuration, and drives the
// instance with systemctl.
type Units struct {
	// Systemctl is systemctl's path.
	Systemctl string
	// DropIns is where instance drop-ins go (/run/systemd/system: they
	// go with a reboot, as privd writes them again when it starts them).
	DropIns string
}

// SystemdRuns reports whether systemd is the host's service manager (as
// sd_booted does).
func SystemdRuns() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// NewUnits returns the Units of the host's systemd.
func NewUnits() *Units {
	return &Units{Systemctl: "/usr/bin/systemctl", DropIns: "/run/systemd/system"}
}

// unit is project's instance name.
func unit(project string) string { return "opus-backend@" + project + ".service" }

func (u *Units) dropIn(project string) string {
	return filepath.Join(u.DropIns, unit(project)+".d", "50-opus.conf")
}

// dropInTemplate sets what comes from privd's configuration: the paths
// (apache_dir, base_dir) and the project's bounds. Every value is a
// validated name, a number, or a path checkConfPath accepts.
var dropInTemplate = template.Must(template.New("dropin").Parse(`# Written by opus-privd for project {{.Name}} - do not edit.
[Service]
PIDFile={{.PidFile}}
ExecStart=
ExecStart=@/usr/sbin/apache2 {{.Argv0}} -d {{.Dir}} -f {{.Conf}} -k start
ExecReload=
ExecReload=/usr/sbin/apache2 -d {{.Dir}} -f {{.Conf}} -k graceful
ReadWritePaths=
ReadWritePaths={{.Dir}} {{.Logs}} {{.Root}}
MemoryMax={{.Memory}}
TasksMax={{.Tasks}}
CPUQuota={{.CPU}}
`))

// RenderDropIn renders project's drop-in for cfg with bounds l (0: none).
func RenderDropIn(cfg config.Config, project string, l config.BackendLimits) ([]byte, error) {
	for _, d := range []string{cfg.BaseDir, cfg.ApacheDir} {
		if err := checkConfPath(d); err != nil {
			return nil, err
		}
	}
	if err := l.Validate(""); err != nil {
		return nil, err
	}
	p := Paths{Dir: cfg.ApacheDir}
	or := func(n int64, s string) string {
		if n == 0 {
			return "infinity"
		}
		return s
	}
	cpu := ""
	if l.CPUPercent > 0 {
		cpu = fmt.Sprintf("%d%%", l.CPUPercent)
	}
	var b bytes.Buffer
	err := dropInTemplate.Execute(&b, map[string]any{
		"Name": project, "Argv0": backendArgv0(project), "PidFile": p.backendPid(project), "Dir": p.Backend(project), "Conf": p.backendConf(project),
		"Logs": p.Logs(), "Root": layout.For(cfg.BaseDir, project).Root,
		"Memory": or(l.MemoryBytes, fmt.Sprint(l.MemoryBytes)), "Tasks": or(int64(l.Tasks), fmt.Sprint(l.Tasks)), "CPU": cpu,
	})
	if err != nil {
		return nil, fmt.Errorf("apache: render drop-in for %s: %w", project, err)
	}
	return b.Bytes(), nil
}

// write puts project's drop-in in place and has systemd read it, when it
// changed.
func (u *Units) write(ctx context.Context, cfg config.Config, project string, l config.BackendLimits) error {
	data, err := RenderDropIn(cfg, project, l)
	if err != nil {
		return err
	}
	path := u.dropIn(project)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("apache: %w", err)
	}
	changed, err := atomicfile.WriteIfChanged(path, data, 0o644)
	if err != nil || !changed {
		return err
	}
	return u.ctl(ctx, "daemon-reload")
}

// start starts project's instance; systemctl returns once the master has
// written its pid file (Type=forking).
func (u *Units) start(ctx context.Context, cfg config.Config, project string, l config.BackendLimits) error {
	if err := u.write(ctx, cfg, project, l); err != nil {
		return err
	}
	return u.ctl(ctx, "start", unit(project))
}

// stop stops project's instance (every process of its cgroup) and removes
// its drop-in.
func (u *Units) stop(ctx context.Context, project string) error {
	if err := u.ctl(ctx, "stop", unit(project)); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Dir(u.dropIn(project))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("apache: %w", err)
	}
	return u.ctl(ctx, "daemon-reload")
}

func (u *Units) ctl(ctx context.Context, args ...string) error {
	if _, err := run(ctx, u.Systemctl, args...); err != nil {
		return fmt.Errorf("apache: %w", err)
	}
	return nil
}
