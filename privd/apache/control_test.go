package apache

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/config"
)

func TestManagedConfGolden(t *testing.T) {
	m := NewManaged(testConfig())
	got, err := m.renderMain()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "httpd.conf.golden", got)
}

func TestCheckInclude(t *testing.T) {
	cfg := testConfig()
	cfg.ApacheMode = config.ApacheSystem
	cfg.ApacheDir = "/etc/apache2/opus-sites"
	line := NewSystem(cfg).IncludeLine()
	tests := []struct {
		name  string
		file  string // relative to the etc dir
		text  string
		found bool
		mods  bool // the front's modules are enabled
	}{
		{"enabled conf", "conf-enabled/opus.conf", line + "\n", true, true},
		{"main config, quoted, Include", "apache2.conf", "# x\nInclude \"/etc/apache2/opus-sites/sites/*.conf\"\n", true, true},
		{"only available, not enabled", "conf-available/opus.conf", line + "\n", false, true},
		{"commented out", "conf-enabled/opus.conf", "# " + line + "\n", false, true},
		{"other directory", "conf-enabled/opus.conf", "IncludeOptional /etc/apache2/other/*.conf\n", false, true},
		{"included, modules missing", "conf-enabled/opus.conf", line + "\n", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			etc := t.TempDir()
			path := filepath.Join(etc, tt.file)
			os.MkdirAll(filepath.Dir(path), 0o755)
			if err := os.WriteFile(path, []byte(tt.text), 0o644); err != nil {
				t.Fatal(err)
			}
			if tt.mods {
				enableFrontModules(t, etc)
			}
			s := NewSystem(cfg)
			s.EtcDir = etc
			err := s.CheckInclude()
			switch {
			case tt.found && err != nil:
				t.Fatalf("CheckInclude = %v, want found", err)
			case !tt.found && !tt.mods && (err == nil || !strings.Contains(err.Error(), "a2enmod ssl headers proxy proxy_http")):
				t.Fatalf("CheckInclude = %v, want an error naming a2enmod and the modules", err)
			case !tt.found && tt.mods && (err == nil || !strings.Contains(err.Error(), line)):
				t.Fatalf("CheckInclude = %v, want an error quoting %q", err, line)
			}
		})
	}
}

// enableFrontModules marks the front's modules enabled under etc, as
// a2enmod would.
func enableFrontModules(t *testing.T, etc string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(etc, "mods-enabled"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, m := range frontModules {
		if err := os.WriteFile(filepath.Join(etc, "mods-enabled", m+".load"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
