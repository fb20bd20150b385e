package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/internal/s3client"
)

// classify turns an error from minio-go into drorch's classes, with a message
// that names the operation, the key and the store but never a credential:
// not found wraps drivers.ErrNotFound; access, bucket and request errors that
// no retry can fix are permanent; anything else (5xx, refused or reset
// connections, timeouts, a cancelled context) is transient.
func (s *s3Store) classify(op, key string, err error) error {
	if err == nil {
		return nil
	}
	where := s.location
	if key != "" {
		where = key + " at " + s.location
	}
	what := op + " " + where

	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	if hint := tlsMismatch(err); hint != "" {
		return drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("%s: %s: %w", what, hint, err))
	}
	resp := minio.ToErrorResponse(err)
	switch resp.Code {
	case "NoSuchKey", "NotFound":
		return fmt.Errorf("%s: %w", what, drivers.ErrNotFound)
	case "InvalidAccessKeyId", "SignatureDoesNotMatch":
		return drivers.Permanentf(drivers.ReasonAccessDenied,
			"%s: access denied: the access key or secret key is wrong (%s)", what, resp.Code)
	case "AccessDenied":
		return drivers.Permanentf(drivers.ReasonAccessDenied,
			"%s: access denied: these credentials lack the permission (%s)", what, resp.Code)
	case "AllAccessDisabled", "AccountProblem":
		return drivers.Permanentf(drivers.ReasonAccessDenied,
			"%s: access denied: %s (%s)", what, resp.Message, resp.Code)
	case "NoSuchBucket":
		return drivers.Permanentf(drivers.ReasonNoSuchBucket,
			"%s: bucket %s does not exist (NoSuchBucket)", what, s.bucket)
	case "InvalidBucketName":
		return drivers.Permanentf(drivers.ReasonInvalidConfig,
			"%s: invalid bucket name %q (InvalidBucketName)", what, s.bucket)
	}
	if st := resp.StatusCode; s3client.Permanent(resp.Code, st) {
		reason := resp.Code
		if reason == "" || strings.ContainsRune(reason, ' ') { // no S3 code, only "400 Bad Request"
			reason = fmt.Sprintf("HTTP%d", st)
		}
		return drivers.Permanent(reason, fmt.Errorf("%s: %w", what, err))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// tlsMismatch explains errors that mean the configuration does not match the
// server's TLS setup, which no retry changes; "" for any other error.
func tlsMismatch(err error) string {
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
		return "the server's TLS certificate does not name the endpoint"
	case errors.As(err, &invalid):
		return "the server's TLS certificate is not valid"
	case errors.As(err, &verify):
		return "the server's TLS certificate cannot be verified"
	case errors.As(err, &record), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return "the server speaks plain HTTP (set insecure, or enable TLS on the server)"
	}
	if resp := minio.ToErrorResponse(err); resp.StatusCode == http.StatusBadRequest &&
		strings.Contains(resp.Message, "HTTP request to an HTTPS server") {
		return "the server speaks HTTPS (unset insecure)"
	}
	return ""
}
