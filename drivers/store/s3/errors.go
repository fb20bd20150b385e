package s3

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/minio/minio-go/v7"

	"github.com/drorch/drorch/drivers"
)

// transientCodes are S3 error codes that a later attempt may not see although
// their HTTP status is a 4xx, which is otherwise permanent.
var transientCodes = map[string]bool{
	"RequestTimeout":        true, // 400: the connection stalled mid-request
	"ExpiredToken":          true, // 400: temporary credentials are refreshed between attempts
	"ExpiredTokenException": true,
	// 400: the body the server received does not match the checksum computed
	// from the bytes sent, so they were damaged on the way; sending again may succeed.
	"BadDigest":                 true,
	"XAmzContentSHA256Mismatch": true,
	"SlowDown":                  true, // throttling, whatever status a server picks
	"Throttling":                true,
	"ThrottlingException":       true,
	"RequestLimitExceeded":      true,
}

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
	if transientCodes[resp.Code] {
		return fmt.Errorf("%s: %w", what, err)
	}
	if st := resp.StatusCode; st >= 400 && st < 500 && st != http.StatusRequestTimeout && st != http.StatusTooManyRequests {
		reason := resp.Code
		if reason == "" {
			reason = drivers.ReasonInvalidInput
		}
		return drivers.Permanent(reason, fmt.Errorf("%s: %w", what, err))
	}
	return fmt.Errorf("%s: %w", what, err)
}
