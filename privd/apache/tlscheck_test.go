package apache

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestCheckPair(t *testing.T) {
	cert, key, err := selfSigned("blog.opus.example.com", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey, err := selfSigned("other.example.com", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		name      string
		cert, key []byte
		now       time.Time
		want      string // "" = accepted
	}{
		{"matching pair", cert, key, now, ""},
		{"chain after leaf", append(append([]byte{}, cert...), otherCert...), key, now, ""},
		{"key of another cert", cert, otherKey, now, "does not match"},
		{"cert of another key", otherCert, key, now, "does not match"},
		{"expired", cert, key, now.Add(48 * time.Hour), "expired"},
		{"not yet valid", cert, key, now.Add(-48 * time.Hour), "not valid yet"},
		{"empty cert", nil, key, now, "required"},
		{"empty key", cert, nil, now, "required"},
		{"garbage", []byte("hello"), []byte("world"), now, "no certificate found"},
		{"huge", bytes.Repeat([]byte("A"), 64<<10+1), key, now, "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, k, err := CheckPair(tt.cert, tt.key, tt.now)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(c, []byte("-----BEGIN CERTIFICATE-----")) || !bytes.HasPrefix(k, []byte("-----BEGIN PRIVATE KEY-----")) {
					t.Errorf("re-encoded pair looks wrong:\n%s\n%s", c, k)
				}
				if _, _, err := CheckPair(c, k, tt.now); err != nil {
					t.Errorf("re-encoded pair does not check: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CheckPair = %v, want error containing %q", err, tt.want)
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
		nc, nk, err := CheckPair(c, k, time.Now())
		if err != nil {
			return
		}
		// Whatever is accepted must re-check after re-encoding.
		if _, _, err := CheckPair(nc, nk, time.Now()); err != nil {
			t.Fatalf("accepted pair fails after re-encoding: %v", err)
		}
	})
}
