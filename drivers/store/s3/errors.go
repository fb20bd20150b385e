package s3

import (
	"context"
	"errors"
	"fmt"
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
	if hint := s3client.TLSMismatch(err); hint != "" {
		return drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("%s: %s: %w", what, hint, err))
	}
	resp := minio.ToErrorResponse(err)
	switch resp.Code {
	case "NoSuchKey", "NotFound":
		s.accepted.Store(true) // the server checked the signature first
		return fmt.Errorf("%s: %w", what, drivers.ErrNotFound)
	case "PreconditionFailed", "ConditionalRequestConflict":
		s.accepted.Store(true)
		// 412, or AWS's 409 for a conditional write that raced another one
		// to the same key: either way the caller's condition did not hold.
		return fmt.Errorf("%s: the condition does not hold (%s): %w", what, resp.Code, drivers.ErrPreconditionFailed)
	case "SignatureDoesNotMatch":
		if strings.HasPrefix(op, "put") && s.accepted.Load() {
			// A streamed upload is signed over its body (SigV4, per 64
			// KiB): bytes damaged on the way fail its signature. The
			// server took these credentials before, so sending the body
			// again is what may help; the retry budget ends it if the key
			// has really changed.
			return fmt.Errorf("%s: the server found the upload's signature wrong, though it accepted these credentials before: its body was likely damaged on the way (or the secret key changed meanwhile) (%s)", what, resp.Code)
		}
		return drivers.Permanentf(drivers.ReasonAccessDenied,
			"%s: access denied: the access key or secret key is wrong (%s)", what, resp.Code)
	case "InvalidAccessKeyId":
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
