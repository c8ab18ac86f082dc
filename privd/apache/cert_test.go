package apache

import (
	"time"

	"github.com/opus-hosting/opus/internal/cert"
)

// selfSigned is a certificate and key for host valid for d, for tests.
func selfSigned(host string, d time.Duration) ([]byte, []byte, error) {
	return cert.SelfSigned([]string{host}, time.Now(), d, 2)
}
