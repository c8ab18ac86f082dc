// Command opusd is the unprivileged Opus daemon: it serves the opus.v1.Opus
// API on a Unix socket any local user may connect to (identity is the
// socket's peer uid), keeps state in a bbolt file, and reconciles projects
// through opus-privd. It runs as the opus user; it never needs root.
//
// This is a thin main: its command line. The lifecycle (configuration,
// listener, sd_notify, watchdog, signals, stop) is internal/daemon's, the
// daemon itself unprivd/opusd's.
package main

import (
	"context"
	"os"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/daemon"
	"github.com/opus-hosting/opus/unprivd/opusd"
)

func main() {
	os.Exit(command().Main(os.Args[1:], os.Stderr))
}

// command is opusd's command line.
func command() *daemon.Command {
	var o opusd.Options
	c := daemon.New("opusd", "Serves the Opus API and deploys projects through opus-privd.")
	c.PathVar(&o.Socket, "socket", config.Config.OpusdSocket, "Unix socket to serve the Opus API on, unless systemd passes one (config run_dir)")
	c.Key("state-dir", "base_dir", "base directory: state file opusd.db, uploads in sources/, git cache in git/, project trees in projects/ (config base_dir)")
	c.PathVar(&o.PrivdSocket, "privd-socket", config.Config.PrivdSocket, "opus-privd's Unix socket (config run_dir)")
	c.Key("admin-group", "admin_group", "group whose members may see and change every project (config admin_group)")
	c.Key("server-suffix", "server_suffix", "suffix making a project's host name (config server_suffix)")
	c.StringVar(&o.WebAddr, "web-addr", "", "HOST:PORT to serve the web console on over HTTPS (for example 127.0.0.1:8444; certificate in BASE/web/); empty: no console")
	c.Run = func(ctx context.Context, d *daemon.Daemon) error { return opusd.Run(ctx, d, o) }
	return c
}
