package config

import (
	"reflect"

	"github.com/drorch/drorch/internal/secret"
)

// SecretValues returns the value of every secret the config holds (store
// keys, encryption keys, passwords, TSIG keys, header values, the Temporal
// API key), so that text about to leave the process (a hook's output in an
// error) can be cleaned of them. With WithoutSecrets there are none.
func (c *Config) SecretValues() []string {
	var out []string
	seen := map[string]bool{}
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Struct:
			if v.Type() == reflect.TypeFor[secret.Secret]() {
				if s := v.Interface().(secret.Secret).Value(); s != "" && !seen[s] {
					seen[s] = true
					out = append(out, s)
				}
				return
			}
			for i := range v.NumField() {
				if v.Type().Field(i).IsExported() {
					walk(v.Field(i))
				}
			}
		case reflect.Slice, reflect.Array:
			for i := range v.Len() {
				walk(v.Index(i))
			}
		case reflect.Map:
			for _, k := range v.MapKeys() {
				walk(v.MapIndex(k))
			}
		}
	}
	if c != nil {
		walk(reflect.ValueOf(c).Elem())
	}
	return out
}
