package cert

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/cert/certtest"
)

// hostPython is the interpreter whose ssl module is the host's OpenSSL:
// Debian's python3 links the same libssl.so.3 and libcrypto.so.3 as
// Apache's mod_ssl.
const hostPython = "/usr/bin/python3"

// opensslOracle loads each certificate file with its key into a fresh
// server SSL_CTX at each security level, with the very calls mod_ssl makes
// for SSLCertificateFile and SSLCertificateKeyFile (the cipher list, which
// carries @SECLEVEL, first; then SSL_CTX_use_certificate_chain_file,
// SSL_CTX_use_PrivateKey_file, SSL_CTX_check_private_key: that is what
// Python's load_cert_chain does), and reports OpenSSL's error or "". It also
// asks libcrypto's own RSA_security_bits for a modulus of every size.
const opensslOracle = `
import ctypes, ctypes.util, json, ssl, sys
req = json.load(sys.stdin)
out = {"version": ssl.OPENSSL_VERSION, "verdicts": {}, "rsa_bits": []}
for case in req["cases"]:
    verdicts = []
    for level in req["levels"]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=%d" % level)
        try:
            ctx.load_cert_chain(case["cert"], case["key"])
            verdicts.append("")
        except ssl.SSLError as e:
            verdicts.append(str(e))
    out["verdicts"][case["name"]] = verdicts
lib = ctypes.CDLL(ctypes.util.find_library("crypto"))
lib.RSA_new.restype = ctypes.c_void_p
lib.BN_new.restype = ctypes.c_void_p
lib.BN_set_bit.argtypes = [ctypes.c_void_p, ctypes.c_int]
lib.BN_set_word.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
lib.RSA_set0_key.argtypes = [ctypes.c_void_p] * 4
lib.RSA_security_bits.argtypes = [ctypes.c_void_p]
lib.RSA_free.argtypes = [ctypes.c_void_p]
for bits in range(req["rsa_max"] + 1):
    if bits < 1:
        out["rsa_bits"].append(0)
        continue
    r, n, e = lib.RSA_new(), lib.BN_new(), lib.BN_new()
    lib.BN_set_bit(n, bits - 1)
    lib.BN_set_word(e, 65537)
    lib.RSA_set0_key(r, n, e, None)
    out["rsa_bits"].append(lib.RSA_security_bits(r))
    lib.RSA_free(r)
json.dump(out, sys.stdout)
`

// TestCheckMatchesOpenSSL asserts that Check's verdict on every chain of
// levelCases, at every security level, is the host OpenSSL's when it loads
// that chain as mod_ssl does, and that rsaSecurityBits is libcrypto's
// estimate for every modulus size up to 16384 bits. It is the proof that
// what opusd and privd accept, Apache loads, and what they refuse, Apache
// would have refused.
func TestCheckMatchesOpenSSL(t *testing.T) {
	if _, err := os.Stat(hostPython); err != nil {
		t.Skipf("needs %s (Debian's python3, linked with the host's OpenSSL) to ask OpenSSL: %v", hostPython, err)
	}
	if out, err := exec.Command(hostPython, "-c", "import ssl, ctypes").CombinedOutput(); err != nil {
		t.Skipf("%s has no ssl module: %v: %s", hostPython, err, out)
	}
	cases := levelCases(t)
	dir := t.TempDir()
	type oracleCase struct {
		Name string `json:"name"`
		Cert string `json:"cert"`
		Key  string `json:"key"`
	}
	const rsaMax = 16384
	levels := []int{0, 1, 2, 3, 4, 5}
	req := struct {
		Cases  []oracleCase `json:"cases"`
		Levels []int        `json:"levels"`
		RSAMax int          `json:"rsa_max"`
	}{Levels: levels, RSAMax: rsaMax}
	pems := map[string][2][]byte{}
	for i, tc := range cases {
		certPEM, keyPEM := certtest.PEM(tc.key, tc.chain...)
		pems[tc.name] = [2][]byte{certPEM, keyPEM}
		c, k := filepath.Join(dir, strconv.Itoa(i)+".crt"), filepath.Join(dir, strconv.Itoa(i)+".key")
		if err := os.WriteFile(c, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(k, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		req.Cases = append(req.Cases, oracleCase{Name: tc.name, Cert: c, Key: k})
	}
	in, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, hostPython, "-I", "-c", opensslOracle)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("asking OpenSSL: %v: %s", err, stderr.Bytes())
	}
	var ans struct {
		Version  string              `json:"version"`
		Verdicts map[string][]string `json:"verdicts"`
		RSABits  []int               `json:"rsa_bits"`
	}
	if err := json.Unmarshal(out, &ans); err != nil {
		t.Fatalf("OpenSSL's answer: %v: %.500s", err, out)
	}
	t.Logf("asked %s", ans.Version)

	at := time.Now()
	refusals := make([]int, len(levels))
	for _, tc := range cases {
		got := ans.Verdicts[tc.name]
		if len(got) != len(levels) {
			t.Fatalf("%s: OpenSSL answered %d verdicts, want %d", tc.name, len(got), len(levels))
		}
		p := pems[tc.name]
		for i, level := range levels {
			_, goErr := Check(p[0], p[1], at, level)
			if (goErr != nil) != (got[i] != "") {
				t.Errorf("%s at level %d: Go says %v, OpenSSL says %q", tc.name, level, goErr, got[i])
			}
			if got[i] != "" {
				refusals[i]++
			}
		}
	}
	// The table must exercise refusals at every level from 1, and none at
	// level 0, or agreement would prove little.
	for i, level := range levels {
		if (level == 0) != (refusals[i] == 0) {
			t.Errorf("level %d: OpenSSL refused %d of %d chains", level, refusals[i], len(cases))
		}
	}

	if len(ans.RSABits) != rsaMax+1 {
		t.Fatalf("OpenSSL rated %d RSA sizes, want %d", len(ans.RSABits), rsaMax+1)
	}
	for n := 8; n <= rsaMax; n++ {
		if got := rsaSecurityBits(n); got != ans.RSABits[n] {
			t.Errorf("RSA %d bits: rsaSecurityBits = %d, RSA_security_bits = %d", n, got, ans.RSABits[n])
		}
	}
}
