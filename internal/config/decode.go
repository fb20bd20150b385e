package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/drorch/drorch/internal/secret"
)

// Error is one problem in a config file.
type Error struct {
	File string
	Line int    // 0 when the problem has no place in the file, such as a missing section
	Path string // the field, such as "plans.files.source.primary.path"; "" for the file as a whole
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// decoder walks the YAML node tree into the config types itself, rather than
// through yaml.v3's decoder, so that it can name the path and line of every
// unknown key, duplicate key and wrongly typed value, keep going after the
// first, and never print a secret. A config type's yaml tags are its keys; a
// new field needs only its tag and, if it has rules, a line in validate.go.
type decoder struct {
	file   string
	opts   options
	lines  map[string]int  // path → line of its key
	failed map[string]bool // paths that already have an error
	errs   []*Error
}

func newDecoder(file string, o options) *decoder {
	return &decoder{file: file, opts: o, lines: map[string]int{}, failed: map[string]bool{}}
}

// errorAt records a problem at a known line.
func (d *decoder) errorAt(line int, path, format string, args ...any) {
	d.failed[path] = true
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// errorf records a problem found after decoding, at the line of path or of
// its nearest ancestor in the file. It reports nothing under a path that
// already has a problem, so that a field that failed to decode is not also
// reported as missing; and a problem under a section that is not in the file
// at all is reported once, as the section being required.
func (d *decoder) errorf(path, format string, args ...any) {
	missing := ""
	for p := path; p != ""; p = parent(p) {
		if d.failed[p] {
			return
		}
		if _, ok := d.lines[p]; !ok && p != path {
			missing = p
		}
	}
	if missing != "" {
		path, format, args = missing, "required", nil
		if d.failed[path] {
			return
		}
	}
	d.errorAt(d.lineOf(path), path, format, args...)
}

func parent(path string) string {
	i := strings.LastIndexByte(path, '.')
	if i < 0 {
		return ""
	}
	return path[:i]
}

func (d *decoder) lineOf(path string) int {
	for ; path != ""; path = parent(path) {
		if l, ok := d.lines[path]; ok {
			return l
		}
	}
	return 0
}

func (d *decoder) err() error {
	if len(d.errs) == 0 {
		return nil
	}
	// In the order of the file, then the problems of the file as a whole.
	slices.SortStableFunc(d.errs, func(a, b *Error) int {
		key := func(e *Error) int {
			if e.Line == 0 {
				return math.MaxInt
			}
			return e.Line
		}
		return cmp.Compare(key(a), key(b))
	})
	errs := make([]error, len(d.errs))
	for i, e := range d.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

func (d *decoder) parse(data []byte) *Config {
	cfg := &Config{File: d.file}
	applyDefaults(reflect.ValueOf(cfg).Elem())

	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc, next yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		d.errs = append(d.errs, syntaxError(d.file, data, err))
		return cfg
	}
	switch err := dec.Decode(&next); {
	case err == nil:
		d.errorAt(next.Line, "", "holds more than one YAML document; put the whole config in one")
	case !errors.Is(err, io.EOF):
		d.errs = append(d.errs, syntaxError(d.file, data, err))
		return cfg
	}
	if len(doc.Content) == 1 {
		d.decode(doc.Content[0], reflect.ValueOf(cfg).Elem(), "")
	}
	if !d.failed[""] {
		cfg.validate(d)
	}
	return cfg
}

const maxSearch = 5000

var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?`)

// syntaxError turns a YAML parse error into an Error at the line of the
// problem. yaml.v3 reports the line where the enclosing construct starts,
// counts from zero for some errors and leaves the line out for the first, so
// the line is found again as the shortest run of leading lines that fails to
// parse with the same message (in files of up to maxSearch lines, as the
// search parses the file once per line).
func syntaxError(file string, data []byte, err error) *Error {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	for n := 1; n <= len(lines) && len(lines) <= maxSearch; n++ {
		perr := parseAll(bytes.Join(lines[:n], nil))
		if perr != nil && yamlLine.ReplaceAllString(perr.Error(), "") == msg {
			line = n
			break
		}
	}
	return &Error{File: file, Line: line, Msg: "YAML syntax: " + msg}
}

func parseAll(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

type defaulter interface{ setDefaults() }

// applyDefaults sets the defaults of the struct v and of the structs it holds
// by value. Fields the file sets are decoded over them.
func applyDefaults(v reflect.Value) {
	if d, ok := v.Addr().Interface().(defaulter); ok {
		d.setDefaults()
	}
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Struct && f.CanSet() {
			applyDefaults(f)
		}
	}
}

var (
	secretType   = reflect.TypeFor[secret.Secret]()
	durationType = reflect.TypeFor[time.Duration]()
)

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// decode decodes the node n at path into v. A null value, and an empty
// string for a string field, leaves v as it is: at its default.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if _, ok := d.lines[path]; !ok {
		d.lines[path] = n.Line
	}
	null := n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
	t := v.Type()
	switch {
	case t == secretType:
		if !null {
			d.secret(n, v, path)
		}
	case t.Kind() == reflect.Struct:
		if !null {
			d.mapping(n, v, path)
		}
	case t.Implements(scalarFormType) && n.Kind == yaml.ScalarNode && !null:
		p := reflect.New(t.Elem()) // a section written as one value: "snapshot: reflink"
		applyDefaults(p.Elem())
		if err := p.Interface().(scalarForm).fromScalar(n.Value); err != nil {
			d.errorAt(n.Line, path, "%v", err)
			return
		}
		v.Set(p)
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct:
		// A section written with nothing under it is present, and so is
		// checked: "encryption:" without a key is an error, not "no encryption".
		p := reflect.New(t.Elem())
		applyDefaults(p.Elem())
		if !null {
			d.mapping(n, p.Elem(), path)
		}
		v.Set(p)
	case t == durationType:
		if null {
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if n.Kind != yaml.ScalarNode || err != nil || dur < 0 {
			d.errorAt(n.Line, path, "must be a duration such as 30s, 5m or 1h30m, got %s", valueOf(n))
			return
		}
		v.SetInt(int64(dur))
	case t.Kind() == reflect.Slice:
		if null {
			return
		}
		d.list(n, v, path)
	case t.Kind() == reflect.Map:
		if v.IsNil() {
			v.Set(reflect.MakeMap(t))
		}
		if !null {
			d.namedMap(n, v, path)
		}
	case t.Kind() == reflect.String:
		if null {
			return
		}
		if n.Kind != yaml.ScalarNode {
			d.errorAt(n.Line, path, "must be a string, got %s", kindOf(n))
		} else if n.Value != "" {
			v.SetString(n.Value)
		}
	case t.Kind() == reflect.Int:
		if null {
			return
		}
		var i int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil || v.OverflowInt(i) {
			d.errorAt(n.Line, path, "must be an integer, got %s", valueOf(n))
			return
		}
		v.SetInt(i)
	case t.Kind() == reflect.Bool:
		if null {
			return
		}
		var b bool
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			d.errorAt(n.Line, path, "must be true or false, got %s", valueOf(n))
			return
		}
		v.SetBool(b)
	default:
		panic(fmt.Sprintf("config: field %s has type %s, which the decoder does not handle", path, t))
	}
}

// mapping decodes a mapping into the struct v, one field per yaml tag.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		// Never the value: a key pasted in place of its section must not print.
		d.errorAt(n.Line, path, "must be a mapping of keys to values, got %s", kindOf(n))
		return
	}
	fields := fieldsOf(v.Type())
	for _, e := range d.entries(n, path) {
		p := join(path, e.key.Value)
		i := slices.IndexFunc(fields, func(f field) bool { return f.key == e.key.Value })
		if i < 0 {
			keys := make([]string, len(fields))
			for j, f := range fields {
				keys[j] = f.key
			}
			d.errorAt(e.key.Line, p, "unknown key; allowed: %s", strings.Join(keys, ", "))
			continue
		}
		d.lines[p] = e.key.Line
		d.decode(e.value, v.Field(fields[i].index), p)
	}
}

// namedMap decodes a mapping of names to sections, such as sites or plans,
// into the map v. A section with a Name field gets its key as its name.
func (d *decoder) namedMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorAt(n.Line, path, "must be a mapping of names to sections, got %s", kindOf(n))
		return
	}
	et := v.Type().Elem()
	for _, e := range d.entries(n, path) {
		p := join(path, e.key.Value)
		d.lines[p] = e.key.Line
		ev := reflect.New(et).Elem()
		d.decode(e.value, ev, p)
		if ev.Kind() == reflect.Pointer {
			if name := ev.Elem().FieldByName("Name"); name.IsValid() && name.Kind() == reflect.String {
				name.SetString(e.key.Value)
			}
		}
		v.SetMapIndex(reflect.ValueOf(e.key.Value), ev)
	}
}

// list decodes a sequence into the slice v, the elements at path[0],
// path[1]... A single value where a list of strings is expected is a list of
// one: "values: {primary: 192.0.2.1}".
func (d *decoder) list(n *yaml.Node, v reflect.Value, path string) {
	items := n.Content
	switch {
	case n.Kind == yaml.ScalarNode && v.Type().Elem().Kind() == reflect.String:
		items = []*yaml.Node{n}
	case n.Kind != yaml.SequenceNode:
		d.errorAt(n.Line, path, "must be a list, got %s", kindOf(n))
		return
	}
	out := reflect.MakeSlice(v.Type(), 0, len(items))
	for i, item := range items {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.lines[p] = item.Line
		ev := reflect.New(v.Type().Elem()).Elem()
		d.decode(item, ev, p)
		out = reflect.Append(out, ev)
	}
	v.Set(out)
}

type entry struct{ key, value *yaml.Node }

// entries returns the keys and values of a mapping, with the keys of merged
// mappings ("<<: *anchor") that the mapping does not set itself. Duplicate
// and non-string keys are reported and left out.
func (d *decoder) entries(n *yaml.Node, path string) []entry {
	var out []entry
	var merges []*yaml.Node
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
			merges = append(merges, val)
			continue
		}
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			d.errorAt(k.Line, path, "keys must be strings, got %s", kindOf(k))
			continue
		}
		if l, ok := first[k.Value]; ok {
			d.errorAt(k.Line, join(path, k.Value), "duplicate key (first at line %d)", l)
			continue
		}
		first[k.Value] = k.Line
		out = append(out, entry{k, val})
	}
	for _, m := range merges {
		if m.Kind == yaml.AliasNode {
			m = m.Alias
		}
		var sources []*yaml.Node
		switch m.Kind {
		case yaml.MappingNode:
			sources = []*yaml.Node{m}
		case yaml.SequenceNode:
			for _, s := range m.Content {
				if s.Kind == yaml.AliasNode {
					s = s.Alias
				}
				sources = append(sources, s)
			}
		}
		for _, s := range sources {
			if s.Kind != yaml.MappingNode {
				d.errorAt(s.Line, path, "<< must merge a mapping or a list of mappings, got %s", kindOf(s))
				continue
			}
			for _, e := range d.entries(s, path) {
				if _, ok := first[e.key.Value]; !ok {
					first[e.key.Value] = e.key.Line
					out = append(out, e)
				}
			}
		}
	}
	return out
}

// secret checks a secret reference and, unless secrets are off, resolves it.
// Nothing here prints the value given: it may be the secret itself.
func (d *decoder) secret(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode || !validRef(n.Value) {
		d.errorAt(n.Line, path, `must be a reference "env:NAME" or "file:PATH", not an inline value`)
		return
	}
	if n.Value == "" {
		return // reported as missing by validate where it is required
	}
	if d.opts.noSecrets {
		v.Set(reflect.ValueOf(secret.New(n.Value, "")))
		return
	}
	s, err := secret.Resolve(n.Value)
	if err != nil {
		d.errorAt(n.Line, path, "%v", err)
		return
	}
	v.Set(reflect.ValueOf(s))
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func validRef(ref string) bool {
	if ref == "" {
		return true
	}
	kind, arg, _ := strings.Cut(ref, ":")
	switch kind {
	case "env":
		return envName.MatchString(arg)
	case "file":
		return arg != ""
	}
	return false
}

type field struct {
	key   string
	index int
}

func fieldsOf(t reflect.Type) []field {
	var fs []field
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if key != "" && key != "-" {
			fs = append(fs, field{key, i})
		}
	}
	return fs
}

func kindOf(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return "a single value"
}

// valueOf describes a value for fields that hold no secret.
func valueOf(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return strconv.Quote(n.Value)
	}
	return kindOf(n)
}
