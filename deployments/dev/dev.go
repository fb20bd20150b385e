// Package dev embeds the dev stack's deployment config, the default of the
// binaries when no config file is given or found.
package dev

import _ "embed"

// Config is deployments/dev/drorch.yaml.
//
//go:embed drorch.yaml
var Config []byte

// Name is how the embedded config is named in messages.
const Name = "(embedded dev config deployments/dev/drorch.yaml)"
