// Package redact takes secrets out of text that leaves a process for a
// workflow history, an error or a log: the output of an operator's command,
// a webhook's answer, a URL. Histories are kept for as long as Temporal
// retains them and are shown to anyone with access to the namespace, so what
// goes there is capped and cleaned first.
//
// What it removes:
//   - the query string and fragment of every URL (tokens and signatures live
//     there: ?X-Amz-Signature=…, ?token=…, #access_token=…), and its user
//     information (user:password@);
//   - the value of anything written as a credential assignment or header
//     (password=…, token: …, Authorization: Bearer …);
//   - every secret value the caller knows (the plan's keys and passwords).
//
// It cannot recognise a secret it is not told of that looks like any other
// word; commands should still not print secrets.
package redact

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// TailSize is how much of a command's output, or of an answer's body, is
// kept for an error: its last 2 KiB, enough for the error a script prints
// last, small enough that retries do not bloat a history.
const TailSize = 2 << 10

// Mask replaces what is removed.
const Mask = "[redacted]"

var (
	urlRE = regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.-]*://[^\s"'<>` + "`" + `]+`)
	// authRE matches an Authorization header and its whole value (scheme and
	// credentials).
	authRE = regexp.MustCompile(`(?i)(\b(?:proxy-)?authorization\s*[:=]\s*)(?:(?:bearer|basic|digest|token)\s+)?[^\s"',;]+`)
	// assignRE matches a credential written as name=value, name: value or
	// "name": "value".
	assignRE = regexp.MustCompile(`(?i)(\b[a-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential)s?["']?\s*[:=]\s*["']?)([^\s"'&,;]+)`)
)

// Text returns s with URL query strings, fragments and user information,
// credential assignments and headers, and every value in secrets removed.
func Text(s string, secrets []string) string {
	s = Values(s, secrets)
	s = urlRE.ReplaceAllStringFunc(s, URL)
	s = authRE.ReplaceAllString(s, "${1}"+Mask)
	s = assignRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := assignRE.FindStringSubmatch(m)
		if sub[2] == Mask {
			return m
		}
		return sub[1] + Mask
	})
	return s
}

// URL returns raw without its user information, query string and fragment;
// a "?" or "#" shows where they were.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		// Not parseable: cut at the first sign of a query, and any userinfo.
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			raw = raw[:i+1] + Mask
		}
		if scheme, rest, ok := strings.Cut(raw, "://"); ok {
			if at := strings.LastIndex(strings.SplitN(rest, "/", 2)[0], "@"); at >= 0 {
				raw = scheme + "://" + rest[at+1:]
			}
		}
		return raw
	}
	hadQuery := u.RawQuery != "" || u.ForceQuery
	hadFragment := u.Fragment != "" || u.RawFragment != ""
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	out := u.String()
	if hadQuery {
		out += "?" + Mask
	}
	if hadFragment {
		out += "#" + Mask
	}
	return out
}

// Values replaces every occurrence of each secret in s. Secrets shorter
// than 4 bytes are left alone: masking every "abc" would make output
// unreadable without hiding anything worth a guess.
func Values(s string, secrets []string) string {
	for _, v := range longestFirst(secrets) {
		s = strings.ReplaceAll(s, v, Mask)
	}
	return s
}

func longestFirst(secrets []string) []string {
	var vs []string
	for _, v := range secrets {
		if len(v) >= 4 {
			vs = append(vs, v)
		}
	}
	slices.SortFunc(vs, func(a, b string) int { return len(b) - len(a) })
	return vs
}

// Tail returns the end of out, cleaned by Text and cut to TailSize bytes on
// a character boundary, and whether anything was cut. cut tells that out
// is itself the end of a longer output. A secret cut in two by either cut
// is not left half shown: a leading piece of one is masked too.
func Tail(out []byte, cut bool, secrets []string) (string, bool) {
	s := strings.ToValidUTF8(string(out), "\uFFFD")
	s = Text(s, secrets)
	if len(s) > TailSize {
		i := len(s) - TailSize
		for i < len(s) && !utf8.RuneStart(s[i]) {
			i++
		}
		s, cut = s[i:], true
	}
	if cut {
		s = maskLeadingPiece(s, secrets)
	}
	return strings.TrimSpace(s), cut
}

// maskLeadingPiece masks a prefix of s that is the end of a secret, as
// left where a cut went through it.
func maskLeadingPiece(s string, secrets []string) string {
	for _, v := range longestFirst(secrets) {
		for k := len(v) - 1; k >= 3; k-- { // two characters give nothing away
			if strings.HasPrefix(s, v[len(v)-k:]) {
				return Mask + s[k:]
			}
		}
	}
	return s
}
