package drivers

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
)

// TLSMismatch explains an error that means a client's TLS settings do not
// match the server's — an untrusted or wrong certificate, or plain HTTP
// where TLS was expected — which no retry changes; "" for any other error.
// plainHTTP is the advice for a server that speaks plain HTTP.
func TLSMismatch(err error, plainHTTP string) string {
	if err == nil {
		return ""
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknownCA):
		return "the server's TLS certificate is signed by an unknown authority (set ca file to the PEM that signed it)"
	case errors.As(err, &hostname):
		return "the server's TLS certificate does not name the server's address"
	case errors.As(err, &invalid):
		return "the server's TLS certificate is not valid"
	case errors.As(err, &verify):
		return "the server's TLS certificate cannot be verified"
	case errors.As(err, &record), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return "the server speaks plain HTTP (" + plainHTTP + ")"
	}
	return ""
}
