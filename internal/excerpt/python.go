package excerpt

import (
	"fmt"
	"regexp"
	"strings"
)

// Bounds of Python's gist.
const (
	// PythonContextLines is how many lines before the exception line
	// Python keeps: the traceback's innermost frames, or the output's
	// last lines.
	PythonContextLines = 12
	// pythonMessageLines is how many lines of a multi-line exception
	// message (Django's SystemCheckError lists its issues) are kept.
	pythonMessageLines = 12
	// pythonLineMax bounds each line kept.
	pythonLineMax = 400
)

const tracebackHeader = "Traceback (most recent call last):"

var (
	// exceptionLine is how Python's traceback module ends a traceback at
	// column 0: "Name: message", "pkg.mod.Name: message" or a bare "Name".
	exceptionLine = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:( .*)?)?$`)
	// commandError is how Django's BaseCommand reports an error it
	// handles without a traceback: "CommandError: ...",
	// "SystemCheckError: ...", an exception's name perhaps with its
	// module ("django.db.utils.OperationalError: ...").
	// syntaxError is SyntaxError and its subclasses, whose report ends
	// with a caret under the code.
	syntaxError  = regexp.MustCompile(`^(SyntaxError|IndentationError|TabError)(:|$)`)
	commandError = regexp.MustCompile(`^([a-z_][a-z0-9_]*\.)*[A-Z][A-Za-z0-9_]*(Error|Exception): `)
)

// PythonFailure is the gist of what a failed Python program (manage.py)
// wrote: the line that names the error, then the lines that lead to it.
type PythonFailure struct {
	// Exception is the exception line ("ModuleNotFoundError: No module
	// named 'x'") with the rest of its message when that spans lines,
	// or "" when the output names none (a killed process, say).
	Exception string
	// Context is the last lines of the traceback above the exception
	// line (its header first, with how many lines were left out), or,
	// without a traceback, the output's last non-empty lines before it;
	// line breaks kept, never the exception line again.
	Context string
}

// String is the exception first, then the context, on separate lines.
func (f PythonFailure) String() string {
	switch {
	case f.Exception == "":
		return f.Context
	case f.Context == "":
		return f.Exception
	}
	return f.Exception + "\n" + f.Context
}

// Python finds the gist of a failed Python program's output (stdout and
// stderr together): the exception of its last traceback, or the last
// "NameError: ..." line Django printed without one, and the lines before
// it. Every line is bounded and valid UTF-8; frames of Python's frozen
// import machinery, which show no code, are left out.
func Python(output string) PythonFailure {
	lines := strings.Split(strings.ReplaceAll(output, "\r\n", "\n"), "\n")
	for i, l := range lines {
		lines[i] = Cut(strings.TrimRight(l, " \t\r"), pythonLineMax)
	}
	// The last traceback is the exception that ended the program; one
	// before it is an earlier link of a chain. Its header may follow
	// other output on the same line (stdout's "Applying x..." is not
	// ended by a newline when the migration raises).
	header := -1
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasSuffix(lines[i], tracebackHeader) {
			header = i
			break
		}
	}
	if header >= 0 {
		for i := header + 1; i < len(lines); i++ {
			l := lines[i]
			if l == "" || l[0] == ' ' || l[0] == '\t' {
				continue // a frame, its code, a caret line
			}
			if !exceptionLine.MatchString(l) {
				break
			}
			return PythonFailure{
				Exception: message(lines[i:]),
				Context:   traceback(lines[header+1:i], syntaxError.MatchString(l)),
			}
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if commandError.MatchString(lines[i]) {
			return PythonFailure{Exception: message(lines[i:]), Context: lastLines(lines[:i], lines[i])}
		}
	}
	return PythonFailure{Context: lastLines(lines, "")}
}

// message is the exception line and the rest of a multi-line message
// after it, bounded, without trailing empty lines.
func message(lines []string) string {
	end := len(lines)
	for end > 1 && lines[end-1] == "" {
		end--
	}
	lines = lines[:end]
	if len(lines) > pythonMessageLines {
		lines = append(lines[:pythonMessageLines:pythonMessageLines], fmt.Sprintf("(%d more lines)", len(lines)-pythonMessageLines))
	}
	return strings.Join(lines, "\n")
}

// traceback is the header and the last PythonContextLines lines of a
// traceback's frames. Python 3.11's markers under a frame's code (^^^, ~~~)
// are left out, making room for another frame; only a SyntaxError's caret,
// which points into the code it shows, stays.
func traceback(frames []string, syntax bool) string {
	var keep []string
	for i, l := range frames {
		switch {
		case l == "", strings.HasPrefix(l, `  File "<frozen `):
			continue
		case strings.Trim(l, " ^~") == "" && !(syntax && i == len(frames)-1):
			continue
		}
		keep = append(keep, l)
	}
	head := tracebackHeader
	if n := len(keep) - PythonContextLines; n > 0 {
		// Start at a frame: its "File ..." line, not its code alone.
		for n < len(keep)-1 && !strings.HasPrefix(keep[n], "  File ") {
			n++
		}
		head = fmt.Sprintf("Traceback (most recent call last; %d lines above left out):", n)
		keep = keep[n:]
	}
	if len(keep) == 0 {
		return ""
	}
	return head + "\n" + strings.Join(keep, "\n")
}

// lastLines is the last PythonContextLines non-empty lines other than
// skip (the exception line, said once).
func lastLines(lines []string, skip string) string {
	var keep []string
	for i := len(lines) - 1; i >= 0 && len(keep) < PythonContextLines; i-- {
		if strings.TrimSpace(lines[i]) != "" && lines[i] != skip {
			keep = append(keep, lines[i])
		}
	}
	for i, j := 0, len(keep)-1; i < j; i, j = i+1, j-1 {
		keep[i], keep[j] = keep[j], keep[i]
	}
	return strings.Join(keep, "\n")
}
