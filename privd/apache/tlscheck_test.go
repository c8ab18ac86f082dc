package apache

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/cert/certtest"
)

func TestCheckPair(t *testing.T) {
	crt, key, err := selfSigned("blog.opus.example.com", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey, err := selfSigned("other.example.com", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	weak, weakKey, err := certtest.WeakRSA("blog.opus.example.com")
	if err != nil {
		t.Fatal(err)
	}
	sha1, sha1Key, err := certtest.SHA1Chain("blog.opus.example.com")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		name      string
		cert, key []byte
		now       time.Time
		level     int
		want      string // "" = accepted
	}{
		{"matching pair", crt, key, now, 2, ""},
		{"chain after leaf", append(append([]byte{}, crt...), otherCert...), key, now, 2, ""},
		{"key of another cert", crt, otherKey, now, 2, "does not match"},
		{"cert of another key", otherCert, key, now, 2, "does not match"},
		{"expired", crt, key, now.Add(48 * time.Hour), 2, "expired"},
		{"not yet valid", crt, key, now.Add(-48 * time.Hour), 2, "not valid yet"},
		{"empty cert", nil, key, now, 2, "required"},
		{"empty key", crt, nil, now, 2, "required"},
		{"garbage", []byte("hello"), []byte("world"), now, 2, "no certificate found"},
		{"huge", bytes.Repeat([]byte("A"), 64<<10+1), key, now, 2, "at most"},
		{"RSA-1024 at level 1", weak, weakKey, now, 1, ""},
		{"RSA-1024 at level 2", weak, weakKey, now, 2, "has an RSA 1024-bit key (80-bit security); this host serves certificates at TLS security level 2"},
		{"SHA-1 chain at level 0", sha1, sha1Key, now, 0, ""},
		{"SHA-1 chain at level 1", sha1, sha1Key, now, 1, "is signed with SHA-1 (63-bit security)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, k, err := CheckPair(tt.cert, tt.key, tt.now, tt.level)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(c, []byte("-----BEGIN CERTIFICATE-----")) || !bytes.HasPrefix(k, []byte("-----BEGIN PRIVATE KEY-----")) {
					t.Errorf("re-encoded pair looks wrong:\n%s\n%s", c, k)
				}
				if _, _, err := CheckPair(c, k, tt.now, tt.level); err != nil {
					t.Errorf("re-encoded pair does not check: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, cert.ErrInvalid) {
				t.Fatalf("CheckPair = %v, want an ErrInvalid containing %q", err, tt.want)
			}
			if c != nil || k != nil {
				t.Error("pair returned with an error")
			}
		})
	}
}

func FuzzCheckPair(f *testing.F) {
	cert, key, err := selfSigned("a.example.com", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(cert, key)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), key)
	f.Add(cert, []byte{})
	f.Fuzz(func(t *testing.T, c, k []byte) {
		nc, nk, err := CheckPair(c, k, time.Now(), 2)
		if err != nil {
			return
		}
		// Whatever is accepted must re-check after re-encoding.
		if _, _, err := CheckPair(nc, nk, time.Now(), 2); err != nil {
			t.Fatalf("accepted pair fails after re-encoding: %v", err)
		}
	})
}
