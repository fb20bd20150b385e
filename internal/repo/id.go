package repo

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// ID names a chunk: the SHA-256 of its plaintext. It is the same whether or not
// the repository is encrypted, which is what lets runs and sites share chunks.
type ID [32]byte

// Hash returns the ID of a chunk whose plaintext is plain.
func Hash(plain []byte) ID { return sha256.Sum256(plain) }

// ParseID parses 64 lowercase hex digits.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return ID{}, fmt.Errorf("chunk id must be %d hex digits, got %d characters", 2*len(id), len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ID{}, errors.New("chunk id must be lowercase hex digits")
		}
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return ID{}, errors.New("chunk id must be lowercase hex digits")
	}
	return id, nil
}

// String returns the 64 lowercase hex digits of id.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 12 hex digits of id, enough to tell chunks apart in
// messages meant for people; errors that matter name the full id.
func (id ID) Short() string { return hex.EncodeToString(id[:6]) }

// IsZero reports whether id is unset.
func (id ID) IsZero() bool { return id == ID{} }

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) {
	b := make([]byte, 2*len(id))
	hex.Encode(b, id[:])
	return b, nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}
