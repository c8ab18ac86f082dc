package postgres

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// scramIterations is PostgreSQL's own default (scram_iterations, 4096).
const scramIterations = 4096

// scramSaltLen is the salt length PostgreSQL uses for its own verifiers.
const scramSaltLen = 16

// scramVerifier returns the SCRAM-SHA-256 verifier PostgreSQL stores for
// password, in pg_authid.rolpassword's form:
//
//	SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
//
// Ensure sends this instead of the password, so the password is never in a
// statement the server may log (log_min_error_statement, log_statement=ddl)
// or keep (pg_stat_statements). The server stores a string of this form as
// it is (RFC 5802, RFC 7677). The password must already be SASLprep'd;
// Ensure's passwords are ASCII letters and digits (hex in practice), for
// which SASLprep is the identity.
func scramVerifier(password string) (string, error) {
	salt := make([]byte, scramSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("salt for the SCRAM verifier: %w", err)
	}
	return scramVerifierSalt(password, salt, scramIterations)
}

// scramVerifierSalt is scramVerifier with a given salt and iteration count,
// so tests can recompute a verifier the server made.
func scramVerifierSalt(password string, salt []byte, iterations int) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("SCRAM salted password: %w", err)
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := hmacSHA256(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}
