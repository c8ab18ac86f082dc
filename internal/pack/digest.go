package pack

import (
	"crypto/sha256"
	"fmt"
	"strings"

	"github.com/opus-hosting/opus/internal/excerpt"
)

// DigestPrefix starts every archive digest.
const DigestPrefix = "sha256:"

// ValidateDigest checks that d is "sha256:" followed by 64 lowercase hex
// digits, the only form opusd gives an upload (and the API and the upload
// store check).
func ValidateDigest(d string) error {
	hexPart, ok := strings.CutPrefix(d, DigestPrefix)
	if !ok {
		return fmt.Errorf("digest %q must start with %q", excerpt.Short(d), DigestPrefix)
	}
	if len(hexPart) != sha256.Size*2 {
		return fmt.Errorf("digest %q must have %d hex digits after %q", excerpt.Short(d), sha256.Size*2, DigestPrefix)
	}
	for i := 0; i < len(hexPart); i++ {
		c := hexPart[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("digest %q: only lowercase hex digits 0-9a-f may follow %q", excerpt.Short(d), DigestPrefix)
		}
	}
	return nil
}
