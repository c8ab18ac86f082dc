// Package docs holds the project's documentation; its test keeps README's
// references to tests true.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeNamesRealTests: every test, fuzz target or benchmark README
// names (in its security section's table, say) exists in the tree, so the
// claim "this test proves it" cannot outlive the test.
func TestReadmeNamesRealTests(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for _, m := range regexp.MustCompile("`((?:Test|Fuzz|Benchmark)[A-Z][A-Za-z0-9_]*)`").FindAllStringSubmatch(string(readme), -1) {
		named[m[1]] = true
	}
	if len(named) < 20 {
		t.Fatalf("README names only %d tests; the security table should name many more", len(named))
	}
	defined := map[string]bool{}
	def := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Benchmark)[A-Za-z0-9_]*)\(`)
	err = filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range def.FindAllStringSubmatch(string(src), -1) {
			defined[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name := range named {
		if !defined[name] {
			t.Errorf("README names %s, which no test file defines", name)
		}
	}
}

// TestReadmeImagesExist: every picture README shows is in the tree (make
// screenshots writes them), so a renamed page cannot leave README
// pointing at nothing.
func TestReadmeImagesExist(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	images := regexp.MustCompile(`!\[[^\]]*\]\(([^)]+)\)`).FindAllStringSubmatch(string(readme), -1)
	if len(images) < 6 {
		t.Fatalf("README shows %d pictures; the console section shows six", len(images))
	}
	for _, m := range images {
		if _, err := os.Stat(filepath.Join("..", m[1])); err != nil {
			t.Errorf("README shows %s: %v", m[1], err)
		}
	}
}
