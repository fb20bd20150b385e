// Package connect builds the Temporal client of drorch's binaries from the
// deployment config, overridden by flags and the environment variables the
// `temporal` CLI also reads (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
// TEMPORAL_TLS_CERT, TEMPORAL_TLS_KEY, TEMPORAL_TLS_CA, TEMPORAL_TLS_SERVER_NAME,
// TEMPORAL_API_KEY).
package connect

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/rs/zerolog"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/zlog"
)

// Flags are the connection settings given on the command line; empty fields
// fall back to the environment, then to the config.
type Flags struct {
	Address, Namespace                 string
	TLSCert, TLSKey, TLSCA, ServerName string
}

// Settings resolves the connection settings: flags, then environment, then
// config, then defaults.
func Settings(f Flags, c config.Temporal) (config.Temporal, error) {
	pick := func(flag, env, cfg, def string) string {
		for _, v := range []string{flag, os.Getenv(env), cfg, def} {
			if v != "" {
				return v
			}
		}
		return ""
	}
	out := config.Temporal{
		Address:   pick(f.Address, "TEMPORAL_ADDRESS", c.Address, config.DefaultTemporalAddress),
		Namespace: pick(f.Namespace, "TEMPORAL_NAMESPACE", c.Namespace, config.DefaultTemporalNamespace),
		TLS: config.TLS{
			Cert:       pick(f.TLSCert, "TEMPORAL_TLS_CERT", c.TLS.Cert, ""),
			Key:        pick(f.TLSKey, "TEMPORAL_TLS_KEY", c.TLS.Key, ""),
			CA:         pick(f.TLSCA, "TEMPORAL_TLS_CA", c.TLS.CA, ""),
			ServerName: pick(f.ServerName, "TEMPORAL_TLS_SERVER_NAME", c.TLS.ServerName, ""),
		},
		APIKey: c.APIKey,
	}
	if (out.TLS.Cert == "") != (out.TLS.Key == "") {
		return out, errors.New("temporal TLS: give both the client certificate and its key, or neither")
	}
	return out, nil
}

// Dial connects to Temporal with s, logging through zl.
func Dial(s config.Temporal, zl zerolog.Logger, with ...func(*client.Options)) (client.Client, error) {
	opts := client.Options{
		HostPort:      s.Address,
		Namespace:     s.Namespace,
		Logger:        zlog.Temporal(zl),
		DataConverter: converter.GetDefaultDataConverter(),
	}
	if s.TLS.Enabled() {
		tc := &tls.Config{ServerName: s.TLS.ServerName, MinVersion: tls.VersionTLS12}
		if s.TLS.Cert != "" {
			cert, err := tls.LoadX509KeyPair(s.TLS.Cert, s.TLS.Key)
			if err != nil {
				return nil, fmt.Errorf("temporal TLS client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		if s.TLS.CA != "" {
			pem, err := os.ReadFile(s.TLS.CA)
			if err != nil {
				return nil, fmt.Errorf("temporal TLS CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("temporal TLS CA %s: no PEM certificate in it", s.TLS.CA)
			}
			tc.RootCAs = pool
		}
		opts.ConnectionOptions.TLS = tc
	}
	key := s.APIKey.Value()
	if v := os.Getenv("TEMPORAL_API_KEY"); v != "" {
		key = v
	}
	if key != "" {
		opts.Credentials = client.NewAPIKeyStaticCredentials(key)
		if opts.ConnectionOptions.TLS == nil {
			opts.ConnectionOptions.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}
	for _, f := range with {
		f(&opts)
	}
	c, err := client.Dial(opts)
	if err != nil {
		return nil, fmt.Errorf("connect to Temporal at %s (namespace %s): %w", s.Address, s.Namespace, err)
	}
	return c, nil
}
