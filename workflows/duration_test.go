package workflows

import (
	"encoding/json"
	"testing"
	"time"
)

func TestDurationJSON(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{{2600 * time.Millisecond, `"2.6s"`}, {90 * time.Minute, `"1h30m0s"`}, {59960 * time.Millisecond, `"59.96s"`}, {1234567 * time.Nanosecond, `"1ms"`}, {0, `"0s"`}} {
		b, err := json.Marshal(Duration(c.d))
		if err != nil || string(b) != c.want {
			t.Errorf("Marshal(%s) = %s, %v; want %s", c.d, b, err, c.want)
		}
	}
	var d Duration
	if err := json.Unmarshal([]byte(`2600000000`), &d); err != nil || d.D() != 2600*time.Millisecond {
		t.Errorf("nanoseconds: %v, %v", d, err)
	}
	if err := json.Unmarshal([]byte(`"1m30s"`), &d); err != nil || d.D() != 90*time.Second {
		t.Errorf("string: %v, %v", d, err)
	}
	if err := json.Unmarshal([]byte(`"soon"`), &d); err == nil {
		t.Error("a bad string was accepted")
	}
}
