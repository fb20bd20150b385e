package config

import (
	"slices"
	"testing"
)

func TestSecretValuesListsEverySecret(t *testing.T) {
	setSecrets(t)
	cfg, err := Parse("drorch.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.SecretValues()
	for _, want := range []string{primaryAccess, primarySecret, secondaryAccess, secondarySecret, filesKey} {
		if !slices.Contains(got, want) {
			t.Errorf("SecretValues lacks %q", want)
		}
	}
	cfg, err = Parse("drorch.yaml", []byte(valid), WithoutSecrets())
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.SecretValues(); len(got) != 0 {
		t.Errorf("without secrets: %v", got)
	}
}
