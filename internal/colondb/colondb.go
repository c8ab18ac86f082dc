// Package colondb reads the host's account databases, /etc/passwd and
// /etc/group (passwd(5), group(5)): colon-separated lines, read bounded.
// privd's account handling and opusd's doctor both read them, this way.
package colondb

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// MaxSize bounds how much of a database is read, and MaxLine one line.
const (
	MaxSize = 64 << 20
	MaxLine = 1 << 20
)

// Field counts of the databases.
const (
	PasswdFields = 7
	GroupFields  = 4
)

// Scan calls fn with the fields of every line of path that has n of them
// (blank lines, comments and malformed lines are skipped), until fn
// returns false.
func Scan(path string, n int, fn func(fields []string) bool) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, MaxSize))
	sc.Buffer(make([]byte, 0, 4096), MaxLine)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if fields := strings.Split(line, ":"); len(fields) == n && !fn(fields) {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}
