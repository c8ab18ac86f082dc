// Package datasize writes byte counts for people, one way everywhere: in
// operation messages, logs and opusctl's tables, where "3.2 MiB" reads
// better than 3355443.
package datasize

import "fmt"

// Text is n bytes as "2.0 GiB", "1.5 MiB", "12.0 KiB" or "512 bytes".
func Text(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
