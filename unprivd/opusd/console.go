package opusd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"github.com/opus-hosting/opus/internal/pack"
	"github.com/opus-hosting/opus/internal/peercred"
	"github.com/opus-hosting/opus/unprivd/source"
	"github.com/opus-hosting/opus/unprivd/web"
)

// console is the web console, off unless --web-addr: HTTPS with its own
// self-signed certificate under BASE/web/. All its wiring is here.
type console struct {
	lis     net.Listener // nil: no console
	address string       // its URL
	srv     *http.Server
	c       *web.Console
}

// listenConsole binds the console's address (before the API service is
// made: the service tells callers the console's URL).
func listenConsole(addr, baseDir string) (*console, error) {
	con := &console{}
	if addr == "" {
		return con, nil
	}
	var err error
	con.lis, con.address, err = web.Listen(addr, filepath.Join(baseDir, "web"), time.Now())
	return con, err
}

// url is the console's URL, "" when there is none.
func (con *console) url() string { return con.address }

// serve serves the console. It calls g, the API's own gRPC server (same
// interceptors and access table), as the signed-in uid over an
// in-process listener. Its failure is sent on failed.
func (con *console) serve(g *grpc.Server, uploads web.UploadLimits, log *slog.Logger, failed chan<- error) error {
	if con.lis == nil {
		return nil
	}
	inproc := peercred.NewInProcess()
	go g.Serve(inproc)
	c, err := web.New(web.Config{Listener: inproc, Logger: log, Uploads: uploads})
	if err != nil {
		return err
	}
	con.c = c
	con.srv = &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() {
		if err := con.srv.Serve(con.lis); !errors.Is(err, http.ErrServerClosed) {
			failed <- fmt.Errorf("web console: %w", err)
		}
	}()
	log.Info("web console serving", "url", con.address)
	return nil
}

// close stops the console at once: its live-progress streams would hold
// a graceful shutdown open. Closing it again does nothing.
func (con *console) close() {
	if con.srv != nil {
		con.srv.Close()
		con.c.Close()
		con.srv = nil
	}
	if con.lis != nil {
		con.lis.Close()
		con.lis = nil
	}
}

// consoleUploads are the console's upload limits: the API's largest
// archive and what the upload store lets one app unpack to.
func consoleUploads(l source.Limits) web.UploadLimits {
	return web.UploadLimits{MaxUpload: l.MaxCompressed, Tree: pack.Limits{MaxEntries: l.MaxEntries, MaxBytes: l.MaxUnpacked, MaxFile: l.MaxFile}}
}
