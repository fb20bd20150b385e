package config

import (
	"slices"
	"strings"
	"time"
)

// WAL says how a plan's write-ahead log (PostgreSQL's, archived with
// drorch-worker wal-push) reaches its standby sites: a long-running
// workflow (ShipWAL, docs/wal.md) copies every new WAL file from the
// active site's repository to each standby's, every ShipEvery.
type WAL struct {
	// Ship is "auto" (the default: when a source of the plan is a
	// postgres one in physical mode), "on" or "off".
	Ship string `yaml:"ship"`
	// ShipEvery is the pause between shipping rounds.
	ShipEvery time.Duration `yaml:"shipEvery"`
	// MaxFiles bounds the files one round copies to a standby, so that a
	// round (one activity) stays short after a long outage.
	MaxFiles int `yaml:"maxFiles"`
}

// Defaults of the WAL settings.
const (
	DefaultWALShip      = "auto"
	DefaultWALShipEvery = 5 * time.Second
	DefaultWALMaxFiles  = 64
)

var walShips = []string{"auto", "on", "off"}

func (w *WAL) setDefaults() {
	w.Ship, w.ShipEvery, w.MaxFiles = DefaultWALShip, DefaultWALShipEvery, DefaultWALMaxFiles
}

func (w *WAL) validate(d *decoder, path string) {
	if !slices.Contains(walShips, w.Ship) {
		d.errorf(join(path, "ship"), "must be one of %s, got %q", strings.Join(walShips, ", "), w.Ship)
	}
	if w.ShipEvery < time.Second || w.ShipEvery > time.Hour {
		d.errorf(join(path, "shipEvery"), "must be 1s to 1h, got %s", w.ShipEvery)
	}
	if w.MaxFiles < 1 || w.MaxFiles > 10000 {
		d.errorf(join(path, "maxFiles"), "must be 1 to 10000, got %d", w.MaxFiles)
	}
}

// ShipsWAL reports whether the plan's WAL is shipped to its standbys
// continuously (WAL.Ship).
func (p *Plan) ShipsWAL() bool {
	switch p.WAL.Ship {
	case "on":
		return true
	case "off":
		return false
	}
	for _, s := range p.Source {
		if s.Driver == "postgres" && s.Mode != PostgresLogical { // a pg_dump has no WAL
			return true
		}
	}
	return false
}
