package postgres

import (
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
)

// parseVerifier splits a stored SCRAM-SHA-256 verifier into its salt and
// iteration count, so a verifier can be recomputed and compared.
func parseVerifier(t *testing.T, v string) (salt []byte, iterations int) {
	t.Helper()
	rest, ok := strings.CutPrefix(v, "SCRAM-SHA-256$")
	if !ok {
		t.Fatalf("verifier %q: no SCRAM-SHA-256$ prefix", v)
	}
	params, _, ok := strings.Cut(rest, "$")
	it, s, ok2 := strings.Cut(params, ":")
	if !ok || !ok2 {
		t.Fatalf("verifier %q: not iterations:salt$keys", v)
	}
	iterations, err := strconv.Atoi(it)
	if err != nil {
		t.Fatalf("verifier %q: iterations: %v", v, err)
	}
	if salt, err = base64.StdEncoding.DecodeString(s); err != nil {
		t.Fatalf("verifier %q: salt: %v", v, err)
	}
	return salt, iterations
}

// TestSCRAMVerifierVectors: the verifier matches what PostgreSQL 15 stored
// for the same password and salt (SET password_encryption='scram-sha-256';
// CREATE ROLE ... PASSWORD; SELECT rolpassword FROM pg_authid), and a
// different password or salt does not. TestAdminLive checks the same
// against the running server.
func TestSCRAMVerifierVectors(t *testing.T) {
	const server = "SCRAM-SHA-256$4096:PMpiznwIUCTYdTnzd6/mNQ==$9wNrzgNKa4KwGM5Do8zALnKlHkg+2zqBF8erKLCNYMc=:mjZUslolC0j87sLMUd9slfvnzrbANavnPdXWoRGXtck="
	salt, it := parseVerifier(t, server)
	otherSalt := append([]byte{}, salt...)
	otherSalt[0] ^= 1
	for _, tc := range []struct {
		name     string
		password string
		salt     []byte
		same     bool
	}{
		{"server's password", "0123456789abcdef0123456789abcdef", salt, true},
		{"other password", "0123456789abcdef0123456789abcdee", salt, false},
		{"other salt", "0123456789abcdef0123456789abcdef", otherSalt, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := scramVerifierSalt(tc.password, tc.salt, it)
			if err != nil {
				t.Fatal(err)
			}
			if (got == server) != tc.same {
				t.Errorf("scramVerifierSalt = %s\nserver stored       %s\nwant equal: %v", got, server, tc.same)
			}
		})
	}
}

// TestSCRAMVerifierFresh: each verifier has PostgreSQL's form, a fresh
// 16-byte salt, 4096 iterations, and nothing of the password.
func TestSCRAMVerifierFresh(t *testing.T) {
	const pw = "feedfacefeedfacefeedfacefeedface"
	a, err := scramVerifier(pw)
	if err != nil {
		t.Fatal(err)
	}
	b, err := scramVerifier(pw)
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Errorf("two verifiers are equal: the salt is not fresh")
	}
	for _, v := range []string{a, b} {
		salt, it := parseVerifier(t, v)
		if len(salt) != 16 || it != 4096 {
			t.Errorf("verifier %s: salt %d bytes, %d iterations; want 16, 4096", v, len(salt), it)
		}
		if again, _ := scramVerifierSalt(pw, salt, it); again != v {
			t.Errorf("verifier %s does not recompute from its salt: %s", v, again)
		}
		if strings.Contains(v, pw) || strings.ContainsAny(v, `'"\`) {
			t.Errorf("verifier %s holds the password or a quote", v)
		}
	}
}
