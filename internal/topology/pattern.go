package topology

import (
	"fmt"
	"strconv"
	"strings"
)

// maxExpand bounds what one pattern may expand to, so that a typo such as
// n[1-99999999] is an error instead of an out-of-memory.
const maxExpand = 1 << 21

// Expand expands a name pattern into its names, in order. A pattern holds
// zero or more bracket groups, each a comma list of numbers or ranges:
//
//	gpu-h1-r[01-40]-n[01-18]   → 720 names, zero-padded like the range start
//	rk[1,3,5-7]                → rk1 rk3 rk5 rk6 rk7
//
// Names without brackets expand to themselves.
func Expand(pattern string) ([]string, error) {
	type group struct{ items []string }
	var (
		lits   []string // literal before each group, plus the tail
		groups []group
	)
	rest := pattern
	total := 1
	for {
		open := strings.IndexByte(rest, '[')
		closeIdx := strings.IndexByte(rest, ']')
		if open < 0 {
			if closeIdx >= 0 {
				return nil, fmt.Errorf("pattern %q: ']' without '['", pattern)
			}
			lits = append(lits, rest)
			break
		}
		if closeIdx < open {
			return nil, fmt.Errorf("pattern %q: ']' without '['", pattern)
		}
		body := rest[open+1 : closeIdx]
		if strings.IndexByte(body, '[') >= 0 {
			return nil, fmt.Errorf("pattern %q: nested '['", pattern)
		}
		items, err := expandGroup(body)
		if err != nil {
			return nil, fmt.Errorf("pattern %q: %w", pattern, err)
		}
		total *= len(items)
		if total > maxExpand {
			return nil, fmt.Errorf("pattern %q: expands to more than %d names", pattern, maxExpand)
		}
		lits = append(lits, rest[:open])
		groups = append(groups, group{items})
		rest = rest[closeIdx+1:]
	}
	out := make([]string, 0, total)
	var rec func(i int, prefix string)
	rec = func(i int, prefix string) {
		if i == len(groups) {
			out = append(out, prefix+lits[i])
			return
		}
		for _, it := range groups[i].items {
			rec(i+1, prefix+lits[i]+it)
		}
	}
	rec(0, "")
	return out, nil
}

func expandGroup(body string) ([]string, error) {
	if body == "" {
		return nil, fmt.Errorf("empty []")
	}
	var out []string
	for _, part := range strings.Split(body, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			if !isDigits(part) {
				return nil, fmt.Errorf("[%s]: %q is not a number", body, part)
			}
			out = append(out, part)
			continue
		}
		if !isDigits(lo) || !isDigits(hi) {
			return nil, fmt.Errorf("[%s]: range %q must be numbers like 01-40", body, part)
		}
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || b < a {
			return nil, fmt.Errorf("[%s]: range %q is empty or too large", body, part)
		}
		if b-a+1 > maxExpand || len(out)+(b-a+1) > maxExpand {
			return nil, fmt.Errorf("[%s]: range %q expands to more than %d names", body, part, maxExpand)
		}
		width := 0
		if len(lo) > 1 && lo[0] == '0' {
			width = len(lo)
		}
		for n := a; n <= b; n++ {
			out = append(out, fmt.Sprintf("%0*d", width, n))
		}
	}
	return out, nil
}

func isDigits(s string) bool {
	if s == "" || len(s) > 9 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// substitute replaces {level} placeholders with the names of the ancestors.
func substitute(s string, names map[string]string) (string, error) {
	if strings.IndexByte(s, '{') < 0 {
		return s, nil
	}
	var b strings.Builder
	for {
		open := strings.IndexByte(s, '{')
		if open < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		closeIdx := strings.IndexByte(s[open:], '}')
		if closeIdx < 0 {
			return "", fmt.Errorf("unclosed '{' in %q", s)
		}
		key := s[open+1 : open+closeIdx]
		v, ok := names[key]
		if !ok {
			return "", fmt.Errorf("placeholder {%s} is not an enclosing level", key)
		}
		b.WriteString(s[:open])
		b.WriteString(v)
		s = s[open+closeIdx+1:]
	}
}
