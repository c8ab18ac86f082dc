package cert

import (
	"bytes"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestNewKeyCurveFollowsLevel(t *testing.T) {
	for _, tt := range []struct {
		level int
		curve elliptic.Curve
	}{{0, elliptic.P256()}, {2, elliptic.P256()}, {3, elliptic.P256()}, {4, elliptic.P384()}, {5, elliptic.P521()}} {
		k, err := NewKey(tt.level)
		if err != nil {
			t.Fatal(err)
		}
		if k.Curve != tt.curve {
			t.Errorf("level %d: curve %s, want %s", tt.level, k.Curve.Params().Name, tt.curve.Params().Name)
		}
	}
}

func TestRequest(t *testing.T) {
	key, err := NewKey(2)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewKey(2)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"blog.opus.example", "www.blog.example"}
	der, err := Request(key, names)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(der)
	tampered[len(tampered)-3] ^= 0xff
	tests := []struct {
		name    string
		der     []byte
		names   []string
		wantErr string
	}{
		{name: "as made", der: der, names: names},
		{name: "names in another order", der: der, names: []string{"www.blog.example", "blog.opus.example"}},
		{name: "a name fewer", der: der, names: names[:1], wantErr: "names blog.opus.example, www.blog.example, not blog.opus.example"},
		{name: "another name", der: der, names: []string{"blog.opus.example", "evil.example"}, wantErr: "not blog.opus.example, evil.example"},
		{name: "bad signature", der: tampered, names: names, wantErr: "certificate request"},
		{name: "not DER", der: []byte("hello"), names: names, wantErr: "does not parse"},
		{name: "too large", der: make([]byte, MaxPEM+1), names: names, wantErr: "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ParseRequest(tt.der, tt.names)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !key.PublicKey.Equal(csr.PublicKey) || other.PublicKey.Equal(csr.PublicKey) {
				t.Fatal("the request does not carry the key's public key")
			}
			if csr.Subject.CommonName != names[0] {
				t.Fatalf("common name %q, want %q", csr.Subject.CommonName, names[0])
			}
		})
	}
	if _, err := Request(key, nil); err == nil {
		t.Fatal("a request without names was made")
	}
	if _, err := Request(key, []string{"a b"}); err == nil {
		t.Fatal("a request for a name with a space was made")
	}
}

func TestCheckNames(t *testing.T) {
	crt, _, err := SelfSigned([]string{"a.example", "b.example"}, time.Now(), time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ParseChain(crt)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	for _, tt := range []struct {
		names []string
		ok    bool
	}{
		{[]string{"a.example", "b.example"}, true},
		{[]string{"B.example", "a.example"}, true},
		{[]string{"a.example"}, false},
		{[]string{"a.example", "b.example", "c.example"}, false},
		{[]string{"a.example", "a.example"}, false},
		{nil, false},
	} {
		err := CheckNames(leaf, tt.names)
		if (err == nil) != tt.ok {
			t.Errorf("CheckNames(%v) = %v, want ok %v", tt.names, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckNames(%v) = %v, which is not ErrInvalid", tt.names, err)
		}
	}
}

func TestParseChain(t *testing.T) {
	crt, key, err := SelfSigned([]string{"a.example"}, time.Now(), time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		in      []byte
		n       int
		wantErr string
	}{
		{name: "one", in: crt, n: 1},
		{name: "two", in: append(bytes.Clone(crt), crt...), n: 2},
		{name: "empty", in: nil, wantErr: "no certificate found"},
		{name: "a key", in: key, wantErr: `is "PRIVATE KEY"`},
		{name: "trailing junk", in: append(bytes.Clone(crt), "junk"...), wantErr: "trailing data"},
		{name: "garbage block", in: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("x")}), wantErr: "does not parse"},
		{name: "too large", in: bytes.Repeat([]byte(" "), MaxPEM+1), wantErr: "at most"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := ParseChain(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v, want ErrInvalid with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(chain) != tt.n {
				t.Fatalf("ParseChain = %d certificates, %v; want %d", len(chain), err, tt.n)
			}
		})
	}
}

// FuzzParseChain: the chain parser, which privd runs on what the CA sent
// through opusd, never panics, and what it accepts is only certificates
// that parse on their own.
func FuzzParseChain(f *testing.F) {
	crt, key, err := SelfSigned([]string{"a.example"}, time.Now(), time.Hour, 2)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(crt)
	f.Add(append(bytes.Clone(crt), crt...))
	f.Add(key)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		chain, err := ParseChain(in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if len(chain) == 0 {
			t.Fatal("accepted an empty chain")
		}
		for _, c := range chain {
			if _, err := x509.ParseCertificate(c.Raw); err != nil {
				t.Fatalf("accepted a certificate that does not parse: %v", err)
			}
		}
	})
}
