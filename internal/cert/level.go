package cert

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
)

// OpenSSL's security level decides which certificates a TLS server context
// accepts: at level N >= 1, every key of the served chain and every
// signature OpenSSL rates must give at least SecurityBits(N) bits of
// security. mod_ssl applies the level while it loads SSLCertificateFile
// (SSL_CTX_use_certificate_chain_file), at Apache's start and at every
// graceful restart, and a refusal there ends the Apache parent: every site
// on the host goes down. apache2 -t does not load certificates, so nothing
// but this check stands between an owner's weak certificate and that
// outage. CheckLevel is OpenSSL 3's rule (ssl_security_cert in ssl/t1_lib.c),
// and the cross-check test asserts that it gives the host's own libssl's
// verdict for a table of certificates.

// MaxSecurityLevel is OpenSSL's highest security level.
const MaxSecurityLevel = 5

// levelBits is OpenSSL's least security, in bits, of every key and rated
// signature at each level (minbits_table in ssl/ssl_cert.c).
var levelBits = [MaxSecurityLevel + 1]int{0, 80, 112, 128, 192, 256}

// SecurityBits returns the bits of security OpenSSL requires of keys and
// signatures at level: 0 for level 0 (anything goes), 80, 112, 128, 192 and
// 256 for levels 1 to 5. Levels beyond 0..5 are clamped, as OpenSSL does.
func SecurityBits(level int) int {
	return levelBits[clampLevel(level)]
}

func clampLevel(level int) int {
	return min(max(level, 0), MaxSecurityLevel)
}

// CheckLevel says why OpenSSL at security level would refuse to serve
// chain (the leaf first, then the certificates sent with it), or returns
// nil. For each certificate, as OpenSSL does: its public key must give
// SecurityBits(level) bits, and so must the hash of its signature unless it
// is self-signed (a root's own signature protects nothing). Where Go cannot
// see everything OpenSSL looks at, CheckLevel errs towards refusing: a key
// or signature algorithm it cannot rate is refused at every level from 1.
func CheckLevel(chain []*x509.Certificate, level int) error {
	level = clampLevel(level)
	if level == 0 {
		return nil
	}
	need := levelBits[level]
	for i, c := range chain {
		what := certName(chain, i)
		kind, bits, ok := keyStrength(c)
		if !ok {
			return fmt.Errorf("%s has %s, which this host does not serve: use an RSA or ECDSA key", what, kind)
		}
		if bits < need {
			return fmt.Errorf("%s has %s (%d-bit security); this host serves certificates at TLS security level %d, which needs %d bits: %s",
				what, kind, bits, level, need, keyAdvice(level))
		}
		if isSelfSigned(c) {
			continue
		}
		hash, bits, ok := signatureStrength(c.SignatureAlgorithm)
		if !ok {
			return fmt.Errorf("%s is signed with an algorithm this host cannot rate for TLS (it knows RSA, ECDSA and Ed25519 signatures): %s",
				what, signedAdvice(i, level))
		}
		if bits < need {
			return fmt.Errorf("%s is signed with %s (%d-bit security); this host serves certificates at TLS security level %d, which needs %d bits: %s",
				what, hash, bits, level, need, signedAdvice(i, level))
		}
	}
	return nil
}

// certName names chain[i] for the owner: the leaf by its host names, a
// chain certificate by its place and subject.
func certName(chain []*x509.Certificate, i int) string {
	if i == 0 {
		return "the certificate for " + describe(chain[0])
	}
	return fmt.Sprintf("chain certificate %d of %d (%q)", i, len(chain)-1, describe(chain[i]))
}

func keyAdvice(level int) string {
	switch level {
	case 1, 2:
		return "use RSA 2048 or more, or ECDSA P-256"
	case 3:
		return "use RSA 3072 or more, or ECDSA P-256"
	case 4:
		return "use RSA 7680 or more, or ECDSA P-384"
	}
	return "use RSA 15360 or more, or ECDSA P-521"
}

func hashAdvice(level int) string {
	switch level {
	case 4:
		return "SHA-384 or SHA-512"
	case 5:
		return "SHA-512"
	}
	return "SHA-256 or stronger"
}

func signedAdvice(i, level int) string {
	if i == 0 {
		return "have it reissued signed with " + hashAdvice(level)
	}
	return "use the issuer's chain signed with " + hashAdvice(level)
}

// keyStrength describes c's public key and rates it as OpenSSL does
// (EVP_PKEY_get_security_bits). ok is false for a key type it does not
// rate: DSA (which no browser accepts for TLS any more) and the key types
// Go does not parse, such as Ed448.
func keyStrength(c *x509.Certificate) (kind string, bits int, ok bool) {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		n := k.N.BitLen()
		return fmt.Sprintf("an RSA %d-bit key", n), rsaSecurityBits(n), true
	case *ecdsa.PublicKey:
		// OpenSSL rates a curve by the bit length of its group order,
		// in NIST SP 800-57's steps.
		p := k.Curve.Params()
		order := p.N.BitLen()
		bits := order / 2
		switch {
		case order >= 512:
			bits = 256
		case order >= 384:
			bits = 192
		case order >= 256:
			bits = 128
		case order >= 224:
			bits = 112
		case order >= 160:
			bits = 80
		}
		return "an ECDSA " + p.Name + " key", bits, true
	case ed25519.PublicKey:
		return "an Ed25519 key", 128, true
	}
	if c.PublicKeyAlgorithm == x509.DSA {
		return "a DSA key", 0, false
	}
	return "a key of an unknown type", 0, false
}

// signatureStrength names the hash of a signature algorithm and rates it
// as OpenSSL 3 does (X509_get_signature_info): half the digest size, but
// 63 bits for SHA-1 and 39 for MD5 (their known collision attacks), so
// that neither passes any level from 1.
func signatureStrength(alg x509.SignatureAlgorithm) (hash string, bits int, ok bool) {
	switch alg {
	case x509.MD2WithRSA:
		return "MD2", 0, true // OpenSSL 3 cannot even look it up: refused
	case x509.MD5WithRSA:
		return "MD5", 39, true
	case x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1:
		return "SHA-1", 63, true
	case x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.DSAWithSHA256, x509.ECDSAWithSHA256:
		return "SHA-256", 128, true
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		return "SHA-384", 192, true
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		return "SHA-512", 256, true
	case x509.PureEd25519:
		return "Ed25519", 128, true
	}
	return "", 0, false
}

// signerKey is the public key algorithm a signature algorithm is made with.
func signerKey(alg x509.SignatureAlgorithm) x509.PublicKeyAlgorithm {
	switch alg {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.SHA256WithRSA, x509.SHA384WithRSA,
		x509.SHA512WithRSA, x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS:
		return x509.RSA
	case x509.DSAWithSHA1, x509.DSAWithSHA256:
		return x509.DSA
	case x509.ECDSAWithSHA1, x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512:
		return x509.ECDSA
	case x509.PureEd25519:
		return x509.Ed25519
	}
	return x509.UnknownPublicKeyAlgorithm
}

// isSelfSigned reports whether OpenSSL takes c as self-signed (EXFLAG_SS),
// and so does not rate its signature: its subject is its issuer, its
// authority key id (when it has one and c has a subject key id) is c's own,
// and it is signed with an algorithm of its own key's type. OpenSSL does
// not verify the signature for this, so neither does isSelfSigned. An
// authority key id that names an issuer or serial (which Go does not parse)
// makes it answer false: the signature is then rated, which can only refuse
// more than OpenSSL, never less.
func isSelfSigned(c *x509.Certificate) bool {
	if !bytes.Equal(c.RawSubject, c.RawIssuer) {
		return false
	}
	if len(c.AuthorityKeyId) > 0 && len(c.SubjectKeyId) > 0 && !bytes.Equal(c.AuthorityKeyId, c.SubjectKeyId) {
		return false
	}
	if akidNamesIssuer(c) {
		return false
	}
	k := signerKey(c.SignatureAlgorithm)
	return k != x509.UnknownPublicKeyAlgorithm && k == c.PublicKeyAlgorithm
}

var oidAuthorityKeyID = asn1.ObjectIdentifier{2, 5, 29, 35}

// akidNamesIssuer reports whether c's authority key identifier carries an
// issuer name or serial number ([1] or [2]), or cannot be read.
func akidNamesIssuer(c *x509.Certificate) bool {
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidAuthorityKeyID) {
			continue
		}
		var seq asn1.RawValue
		if rest, err := asn1.Unmarshal(e.Value, &seq); err != nil || len(rest) != 0 {
			return true
		}
		for inner := seq.Bytes; len(inner) > 0; {
			var f asn1.RawValue
			var err error
			if inner, err = asn1.Unmarshal(inner, &f); err != nil {
				return true
			}
			if f.Class != asn1.ClassContextSpecific || f.Tag != 0 {
				return true
			}
		}
	}
	return false
}

// rsaSecurityBits is OpenSSL 3's security estimate of an RSA modulus of n
// bits (ossl_ifc_ffc_compute_security_bits, used by RSA_security_bits):
// the canonical values of NIST SP 800-56B for the common sizes, otherwise
// the formula of its Appendix D,
//
//	E = (1.923 * cbrt(n*ln2 * ln(n*ln2)^2) - 4.69) / ln2,
//
// rounded to a multiple of 8 and capped so it never decreases with n. It
// is computed in the same 18-bit fixed point as OpenSSL, because the
// answer must match bit for bit at the thresholds: a 1963-bit key is worth
// 112 bits (level 2) and a 1962-bit key is not. The cross-check test
// compares it with the host's libcrypto for every n up to 16384.
func rsaSecurityBits(n int) int {
	switch n {
	case 2048:
		return 112
	case 3072:
		return 128
	case 4096:
		return 152
	case 6144:
		return 176
	case 7680:
		return 192
	case 8192:
		return 200
	case 15360:
		return 256
	}
	if n >= 687737 {
		return 1200
	}
	if n < 8 {
		return 0
	}
	limit := uint16(1200)
	if n <= 7680 {
		limit = 192
	} else if n <= 15360 {
		limit = 256
	}
	x := uint64(n) * fixLn2
	lx := uint64(fixLnE(x))
	// The subtraction and the narrowing to 16 bits wrap exactly as the C
	// code's unsigned arithmetic does.
	y := uint16((fixMul(fixC1923, fixCbrt(fixMul(fixMul(x, lx), lx))) - fixC4690) / fixLn2)
	y = uint16((int(y) + 4) &^ 7)
	return int(min(y, limit))
}

// Fixed point with 18 fractional bits, as in OpenSSL's crypto/rsa/rsa_lib.c.
const (
	fixScale  = 1 << 18
	fixCbrtSc = 1 << (2 * 18 / 3) // cube root of fixScale squared
	fixLn2    = 0x02c5c8          // fixScale * ln(2)
	fixLog2E  = 0x05c551          // fixScale * log2(e)
	fixC1923  = 0x07b126          // fixScale * 1.923
	fixC4690  = 0x12c28f          // fixScale * 4.690
)

func fixMul(a, b uint64) uint64 { return a * b / fixScale }

// fixCbrt is the cube root of a fixed-point x, by the shifting nth-root
// method, three bits at a time.
func fixCbrt(x uint64) uint64 {
	var r uint64
	for s := 63; s >= 0; s -= 3 {
		r <<= 1
		b := 3*r*(r+1) + 1
		if x>>uint(s) >= b {
			x -= b << uint(s)
			r++
		}
	}
	return r * fixCbrtSc
}

// fixLnE is the natural logarithm of a fixed-point v > 1: its base-2
// logarithm, bit by bit by repeated squaring, divided by log2(e).
func fixLnE(v uint64) uint32 {
	var r uint32
	for v >= 2*fixScale {
		v >>= 1
		r += fixScale
	}
	for i := uint32(fixScale / 2); i != 0; i /= 2 {
		v = fixMul(v, v)
		if v >= 2*fixScale {
			v >>= 1
			r += i
		}
	}
	return uint32(uint64(r) * fixScale / fixLog2E)
}
