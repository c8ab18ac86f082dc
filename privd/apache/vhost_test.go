package apache

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/names/namestest"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// golden compares got with testdata/name (rewriting it under -update).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("rendered output differs from %s:\n%s", path, got)
	}
}

func testConfig() config.Config {
	c := config.Default()
	c.BaseDir = "/var/lib/opus"
	c.ApacheDir = "/var/lib/opus-apache"
	c.ServerSuffix = ".opus.example.com"
	c.HTTPPort, c.HTTPSPort = 8080, 8443
	return c
}

func TestRenderVhostGolden(t *testing.T) {
	acme := func(c *config.Config) { c.ACMEDirectory = config.LetsEncryptDirectory }
	tests := []struct {
		golden string
		site   Site
		cfg    func(*config.Config)
	}{
		{"vhost_basic.golden", Site{Project: "blog"}, nil},
		{"vhost_aliases.golden", Site{Project: "shop2", Aliases: []string{"shop.example.org", "www.shop.example.org"}}, nil},
		// With ACME, the HTTP vhost serves the challenge directory and
		// keeps that path from the backend; nothing else changes.
		{"vhost_acme.golden", Site{Project: "shop2", Aliases: []string{"shop.example.org"}}, acme},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			cfg := testConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			got, err := RenderVhost(cfg, tt.site, testBackend)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.golden, got)
		})
	}
}

func TestRenderVhostRefuses(t *testing.T) {
	tests := []struct {
		name string
		site Site
		cfg  func(*config.Config)
		want string
	}{
		{"bad project", Site{Project: "Blog"}, nil, "project name"},
		{"reserved project", Site{Project: "admin"}, nil, "reserved"},
		{"bad alias", Site{Project: "blog", Aliases: []string{"ok.com", "bad host"}}, nil, `"bad host"`},
		{"duplicate alias", Site{Project: "blog", Aliases: []string{"a.com", "a.com"}}, nil, "twice"},
		{"alias is server name", Site{Project: "blog", Aliases: []string{"blog.opus.example.com"}}, nil, "twice"},
		{"too many aliases", Site{Project: "blog", Aliases: make([]string, MaxAliases+1)}, nil, "aliases"},
		{"space in base dir", Site{Project: "blog"}, func(c *config.Config) { c.BaseDir = "/var/lib/my opus" }, "configured path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			out, err := RenderVhost(cfg, tt.site, testBackend)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("RenderVhost = %v, want error containing %q", err, tt.want)
			}
			if out != nil {
				t.Errorf("output returned with an error: %q", out)
			}
		})
	}
}

// allowedDirectives are the first words a rendered vhost line may start
// with; anything else means a value escaped its field.
var allowedDirectives = map[string]bool{
	"#": true, "<VirtualHost": true, "</VirtualHost>": true, "ServerName": true,
	"ServerAlias": true, "ErrorLog": true, "RequestHeader": true, "ProxyPreserveHost": true,
	"ProxyPass": true, "ProxyPassReverse": true,
	"SSLEngine": true, "SSLCipherSuite": true, "SSLCertificateFile": true, "SSLCertificateKeyFile": true,
}

// TestVhostSecurityLevel: the vhost carries the configured OpenSSL
// security level, and a level OpenSSL does not have renders nothing.
func TestVhostSecurityLevel(t *testing.T) {
	for level := -1; level <= 6; level++ {
		cfg := testConfig()
		cfg.TLSSecurityLevel = level
		out, err := RenderVhost(cfg, Site{Project: "blog"}, testBackend)
		if level < 0 || level > 5 {
			if err == nil || !strings.Contains(err.Error(), "security level") {
				t.Errorf("level %d: RenderVhost = %v, want a refusal", level, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("level %d: %v", level, err)
		}
		if want := fmt.Sprintf("    SSLCipherSuite HIGH:!aNULL:@SECLEVEL=%d\n", level); bytes.Count(out, []byte(want)) != 1 {
			t.Errorf("level %d: vhost lacks %q:\n%s", level, want, out)
		}
	}
}

func FuzzRenderVhost(f *testing.F) {
	f.Add("blog", "www.example.com", "example.org", uint8(1), uint8(10), int8(2))
	f.Add("shop2", "a\nInclude /etc/shadow", "", uint8(0), uint8(0), int8(0))
	f.Add("x", "a.b.c", "d-e.f", uint8(32), uint8(100), int8(5))
	f.Add("blog", "x.com\r\nLoadModule", "\"", uint8(2), uint8(2), int8(-1))
	f.Fuzz(func(t *testing.T, project, a1, a2 string, procs, threads uint8, level int8) {
		var aliases []string
		for _, a := range []string{a1, a2} {
			if a != "" {
				aliases = append(aliases, a)
			}
		}
		site := Site{Project: project, Aliases: aliases, Processes: int(procs), Threads: int(threads)}
		cfg := testConfig()
		cfg.TLSSecurityLevel = int(level)
		out, err := RenderVhost(cfg, site, testBackend)
		if err != nil {
			return
		}
		if !bytes.Contains(out, []byte(fmt.Sprintf("\n    SSLCipherSuite HIGH:!aNULL:@SECLEVEL=%d\n", level))) || level < 0 || level > 5 {
			t.Fatalf("level %d rendered as:\n%s", level, out)
		}
		if bytes.ContainsAny(out, "\r\x00\"'\\|`$;") {
			t.Fatalf("rendered vhost holds a forbidden character:\n%s", out)
		}
		counts := map[string]int{}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 0 {
				continue
			}
			if !allowedDirectives[f[0]] {
				t.Fatalf("line %q starts with an unexpected directive:\n%s", sc.Text(), out)
			}
			counts[f[0]]++
			if f[0] == "ServerAlias" && len(f)-1 != len(aliases) {
				t.Fatalf("ServerAlias has %d names, want %d: %q", len(f)-1, len(aliases), sc.Text())
			}
		}
		want := map[string]int{"<VirtualHost": 2, "ServerName": 2, "#": 1,
			"SSLEngine": 1, "SSLCipherSuite": 1, "ProxyPass": 2, "ProxyPassReverse": 2, "RequestHeader": 2}
		if len(aliases) > 0 {
			want["ServerAlias"] = 2
		}
		for d, n := range want {
			if counts[d] != n {
				t.Fatalf("%d %s lines, want %d:\n%s", counts[d], d, n, out)
			}
		}
		if counts["ServerAlias"] != want["ServerAlias"] {
			t.Fatalf("%d ServerAlias lines, want %d", counts["ServerAlias"], want["ServerAlias"])
		}
	})
}

// TestHostNamesAgree: the renderer takes exactly the host names of the
// one table every caller of names.ValidateHostName is tested against.
func TestHostNamesAgree(t *testing.T) {
	for _, c := range namestest.Hosts {
		_, err := RenderVhost(testConfig(), Site{Project: "blog", Aliases: []string{c.Name}}, testBackend)
		if (err == nil) != c.OK {
			t.Errorf("alias %.40q: %v, want ok=%v", c.Name, err, c.OK)
		}
	}
}
