package apache

import (
	"bufio"
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

func TestRenderBackendGolden(t *testing.T) {
	tests := []struct {
		golden string
		site   Site
	}{
		{"backend_basic.golden", Site{Project: "blog"}},
		{"backend_sized.golden", Site{Project: "shop2", Processes: 3, Threads: 15}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			got, err := RenderBackend(testConfig(), tt.site, testBackend)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.golden, got)
		})
	}
}

func TestRenderBackendRefuses(t *testing.T) {
	tests := []struct {
		name string
		site Site
		addr netip.AddrPort
		want string
	}{
		{"bad project", Site{Project: "Blog"}, testBackend, "project name"},
		{"processes", Site{Project: "blog", Processes: MaxProcesses + 1}, testBackend, "processes"},
		{"threads", Site{Project: "blog", Threads: MaxThreads + 1}, testBackend, "threads"},
		{"public address", Site{Project: "blog"}, netip.MustParseAddrPort("192.0.2.1:1023"), "loopback"},
		{"no port", Site{Project: "blog"}, netip.MustParseAddrPort("127.1.0.1:0"), "loopback"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := RenderBackend(testConfig(), tt.site, tt.addr)
			if err == nil || !strings.Contains(err.Error(), tt.want) || out != nil {
				t.Fatalf("RenderBackend = %q, %v; want only an error containing %q", out, err, tt.want)
			}
		})
	}
}

// backendDirectives are the first words a rendered backend line may start
// with.
var backendDirectives = map[string]bool{
	"#": true, "ServerRoot": true, "DefaultRuntimeDir": true, "PidFile": true, "ErrorLog": true,
	"LogLevel": true, "ServerName": true, "ServerTokens": true, "ServerSignature": true,
	"LoadModule": true, "User": true, "Group": true, "TypesConfig": true, "Listen": true,
	"StartServers": true, "ServerLimit": true, "ThreadLimit": true, "ThreadsPerChild": true,
	"MaxRequestWorkers": true, "MinSpareThreads": true, "MaxSpareThreads": true,
	"WSGISocketPrefix": true, "WSGIRestrictEmbedded": true, "SetEnvIf": true,
	"WSGIDaemonProcess": true, "WSGIProcessGroup": true, "WSGIApplicationGroup": true,
	"WSGIScriptAlias": true, "Alias": true, "<Directory": true, "</Directory>": true,
	"AllowOverride": true, "Options": true, "Require": true, "<Files": true, "</Files>": true,
}

func FuzzRenderBackend(f *testing.F) {
	f.Add("blog", uint8(1), uint8(10), uint32(70000))
	f.Add("shop2\nUser root", uint8(0), uint8(0), uint32(1))
	f.Add("x", uint8(32), uint8(100), uint32(1<<24))
	f.Fuzz(func(t *testing.T, project string, procs, threads uint8, uid uint32) {
		cfg := testConfig()
		out, err := RenderBackend(cfg, Site{Project: project, Processes: int(procs), Threads: int(threads)}, cfg.BackendAddr(uid))
		if err != nil {
			return
		}
		if bytes.ContainsAny(out, "\r\x00'\\|`;") {
			t.Fatalf("rendered backend holds a forbidden character:\n%s", out)
		}
		counts := map[string]int{}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 0 {
				continue
			}
			if !backendDirectives[f[0]] {
				t.Fatalf("line %q starts with an unexpected directive:\n%s", sc.Text(), out)
			}
			counts[f[0]]++
			if f[0] == "User" && f[1] != "opus-"+project {
				t.Fatalf("User %q, want opus-%s", f[1], project)
			}
		}
		for d, n := range map[string]int{"Listen": 1, "User": 1, "WSGIDaemonProcess": 1, "WSGIScriptAlias": 1, "#": 1} {
			if counts[d] != n {
				t.Fatalf("%d %s lines, want %d:\n%s", counts[d], d, n, out)
			}
		}
	})
}
