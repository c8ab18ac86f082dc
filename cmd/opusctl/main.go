// Command opusctl deploys and manages Django projects through opusd. It is a
// thin shell over package client: see newRootCommand for the command tree.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/opus-hosting/opus/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
		getenv: os.Getenv,
		dial: func(ctx context.Context, socket string) (*client.Client, error) {
			return client.Dial(ctx, socket)
		},
	})
	stop()
	os.Exit(code)
}
