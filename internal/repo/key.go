package repo

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
)

// KeySize is the size of a repository key: AES-256.
const KeySize = 32

// errKeyForm never includes the input: whatever was given might be most of a key.
var errKeyForm = errors.New("repository key must be 32 bytes written as 64 hex digits or as base64 (standard or URL-safe, padded or not)")

// ParseKey decodes a repository key: 64 hex digits, or the standard or URL-safe
// base64 of exactly 32 bytes, with or without padding. Surrounding white space
// (a key file's trailing newline) is ignored. Its errors never echo the input.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) == 2*KeySize {
		// 64 characters could only be hex: base64 of 32 bytes is 43 or 44.
		k, err := hex.DecodeString(s)
		if err != nil {
			return nil, errKeyForm
		}
		return k, nil
	}
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding,
	} {
		k, err := enc.DecodeString(s)
		if err == nil && len(k) == KeySize {
			return k, nil
		}
	}
	return nil, errKeyForm
}
