// Command opus-privd is the root half of Opus: a small gRPC service on a
// Unix socket that only the opus user may call (see package privd/server).
// This is a thin main: its command line. The lifecycle (configuration,
// listener, sd_notify, signals, stop) is internal/daemon's; the privd
// packages are wired together in privd/opusprivd.
package main

import (
	"context"
	"os"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/daemon"
	"github.com/opus-hosting/opus/privd/confine"
	"github.com/opus-hosting/opus/privd/opusprivd"
)

func main() {
	// privd runs itself again to start tenant code confined (package
	// confine); in that mode this never returns.
	confine.MaybeRunChild()
	os.Exit(command(new(string)).Main(os.Args[1:], os.Stderr))
}

// command is opus-privd's command line; socket receives --socket, or its
// default from the configuration read.
func command(socket *string) *daemon.Command {
	c := daemon.New("opus-privd", "opus-privd is Opus's privileged daemon; it serves only the opus user.")
	c.PathVar(socket, "socket", config.Config.PrivdSocket, "Unix socket `path` to listen on when not socket-activated; unless set, privd.sock in the configured run_dir")
	c.Key("base-dir", "base_dir", "base `dir`ectory holding project trees")
	c.Key("opus-user", "opus_user", "the only `user` privd serves")
	c.Key("apache-mode", "apache_mode", "Apache `mode`: managed or system")
	c.Key("apache-dir", "apache_dir", "managed Apache's ServerRoot, or the system vhost `dir`ectory")
	c.Key("http-port", "http_port", "Apache's HTTP `port` for project vhosts")
	c.Key("https-port", "https_port", "Apache's HTTPS `port` for project vhosts")
	c.Run = func(ctx context.Context, d *daemon.Daemon) error { return opusprivd.Run(ctx, d, *socket) }
	return c
}
