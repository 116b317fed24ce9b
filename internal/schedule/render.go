package schedule

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
	"unicode/utf8"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// Limits of a rendered field. A template is read on every pass of the manager, so what it may do
// is bounded by construction: no loops, no sub-templates, no formatting widths; only fields, an
// allow-list of methods of the window's times and a few pure functions.
const (
	// MaxKeyLength is the CRD's limit of spec.source.s3.key, for the template and its output.
	MaxKeyLength = v1alpha1.MaxS3KeyLength
	// MaxParameterLength is the CRD's limit of a Metabase parameter value, template and output.
	MaxParameterLength = v1alpha1.MaxMetabaseParameterLength
	// RenderTimeout bounds one field's rendering (it takes microseconds; this is a backstop).
	RenderTimeout = 100 * time.Millisecond
	// maxDays bounds addDays (a century), so no arithmetic overflows.
	maxDays = 36600
)

// Data is what a run's templates see.
type Data struct {
	Window        Window
	ScheduledTime time.Time
	ScheduleName  string
}

// TemplateError is a template that may not be rendered or failed to render; Field names the
// field (e.g. spec.template.spec.source.s3.key).
type TemplateError struct {
	Field string
	Err   error
}

func (e *TemplateError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *TemplateError) Unwrap() error { return e.Err }

// funcs are the functions a template may call: pure, bounded, on the window's times.
var funcs = template.FuncMap{
	"addDays": func(n int, t time.Time) (time.Time, error) {
		if n > maxDays || n < -maxDays {
			return time.Time{}, fmt.Errorf("addDays %d: at most %d days either way", n, maxDays)
		}
		return AddDays(t, n), nil
	},
	"addHours": func(n int, t time.Time) (time.Time, error) {
		if n > 24*maxDays || n < -24*maxDays {
			return time.Time{}, fmt.Errorf("addHours %d: at most %d hours either way", n, 24*maxDays)
		}
		return t.Add(time.Duration(n) * time.Hour), nil
	},
	"addMinutes": func(n int, t time.Time) (time.Time, error) {
		if n > 1440*maxDays || n < -1440*maxDays {
			return time.Time{}, fmt.Errorf("addMinutes %d: at most %d minutes either way", n, 1440*maxDays)
		}
		return t.Add(time.Duration(n) * time.Minute), nil
	},
	"date": func(layout string, t time.Time) string { return t.Format(layout) },
	"utc":  func(t time.Time) time.Time { return t.UTC() },
}

// Fields of Data and Window a template may read.
var (
	dataFields   = []string{"Window", "ScheduledTime", "ScheduleName"}
	windowFields = []string{"Start", "End", "StartDate", "EndDate"}
	// timeMethods are the methods of time.Time a template may call: pure and bounded (Format's
	// output is bounded by its layout, which is bounded by the template's length).
	timeMethods = []string{"Format", "UTC", "Unix", "Year", "Month", "Day", "Hour", "Minute", "Second",
		"Weekday", "YearDay", "AddDate", "Add", "Truncate"}
)

// Allowed describes what a template may use, for messages.
func Allowed() string {
	fs := make([]string, 0, len(funcs))
	for f := range funcs {
		fs = append(fs, f)
	}
	sort.Strings(fs)
	return fmt.Sprintf("fields .Window.Start, .Window.End, .Window.StartDate, .Window.EndDate, .ScheduledTime, .ScheduleName; "+
		"time methods %s; functions %s", strings.Join(timeMethods, ", "), strings.Join(fs, ", "))
}

// Check parses a template and walks its tree, refusing anything but reading fields and calling
// the allowed methods and functions. It does not run the template.
func Check(field, text string, limit int) (*template.Template, error) {
	// Characters, as the CRD's MaxLength and size() count them, not bytes.
	if n := utf8.RuneCountInString(text); n > limit {
		return nil, &TemplateError{field, fmt.Errorf("template of %d characters, at most %d", n, limit)}
	}
	if !strings.Contains(text, "{{") {
		return nil, nil
	}
	tpl, err := template.New(field).Option("missingkey=error").Funcs(funcs).Parse(text)
	if err != nil {
		return nil, &TemplateError{field, err}
	}
	if len(tpl.Templates()) > 1 {
		return nil, &TemplateError{field, errors.New("define and block are not allowed")}
	}
	if err := checkNode(tpl.Root); err != nil {
		return nil, &TemplateError{field, fmt.Errorf("%w; a template may use only %s", err, Allowed())}
	}
	return tpl, nil
}

func checkNode(n parse.Node) error {
	switch n := n.(type) {
	case nil:
		return nil
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := checkNode(c); err != nil {
				return err
			}
		}
		return nil
	case *parse.TextNode, *parse.CommentNode:
		return nil
	case *parse.ActionNode:
		return checkPipe(n.Pipe)
	case *parse.IfNode:
		return fmt.Errorf("{{if}} is not allowed")
	case *parse.RangeNode:
		return fmt.Errorf("{{range}} is not allowed")
	case *parse.WithNode:
		return fmt.Errorf("{{with}} is not allowed")
	case *parse.TemplateNode:
		return fmt.Errorf("{{template}} is not allowed")
	case *parse.BreakNode, *parse.ContinueNode:
		return fmt.Errorf("{{break}} and {{continue}} are not allowed")
	default:
		return fmt.Errorf("%s is not allowed", n)
	}
}

func checkPipe(p *parse.PipeNode) error {
	if len(p.Decl) > 0 {
		return fmt.Errorf("variables (%s) are not allowed", p)
	}
	for _, c := range p.Cmds {
		for i, a := range c.Args {
			if err := checkArg(a, i == 0); err != nil {
				return err
			}
		}
		if err := checkLayout(c); err != nil {
			return err
		}
	}
	return nil
}

// checkLayout refuses a Format or date whose layout is not a quoted string: a layout computed by
// another Format doubles at every level ("1" formats as "12" in December, which formats as
// "1231"), so a nested chain within the template's length would build petabytes in one call,
// before the output cap or the time bound sees a byte.
func checkLayout(c *parse.CommandNode) error {
	var name string
	switch a := c.Args[0].(type) {
	case *parse.IdentifierNode:
		if a.Ident == "date" {
			name = "date"
		}
	case *parse.FieldNode:
		if len(a.Ident) > 0 && a.Ident[len(a.Ident)-1] == "Format" {
			name = "Format"
		}
	case *parse.ChainNode:
		if len(a.Field) > 0 && a.Field[len(a.Field)-1] == "Format" {
			name = "Format"
		}
	}
	if name == "" {
		return nil
	}
	if len(c.Args) < 2 {
		return fmt.Errorf("%s needs its layout as a quoted string right after it, e.g. %s \"2006-01-02\"", name, name)
	}
	if _, ok := c.Args[1].(*parse.StringNode); !ok {
		return fmt.Errorf("the layout of %s must be a quoted string, not %s", name, c.Args[1])
	}
	return nil
}

func checkArg(a parse.Node, first bool) error {
	switch a := a.(type) {
	case *parse.FieldNode:
		return checkFields(a.Ident, true)
	case *parse.ChainNode:
		if err := checkArg(a.Node, false); err != nil {
			return err
		}
		return checkFields(a.Field, false)
	case *parse.IdentifierNode:
		if _, ok := funcs[a.Ident]; !ok {
			return fmt.Errorf("function %q is not allowed", a.Ident)
		}
		if !first {
			return fmt.Errorf("function %q as an argument is not allowed; call it in parentheses", a.Ident)
		}
		return nil
	case *parse.PipeNode:
		return checkPipe(a)
	case *parse.StringNode, *parse.NumberNode, *parse.BoolNode:
		return nil
	case *parse.DotNode:
		return errors.New("{{ . }} is not allowed; name a field")
	case *parse.VariableNode:
		return fmt.Errorf("variables (%s) are not allowed", a)
	default:
		return fmt.Errorf("%s is not allowed", a)
	}
}

// checkFields checks a chain of field and method names: from the data when root, else on a time.
func checkFields(idents []string, root bool) error {
	i := 0
	if root {
		if len(idents) == 0 || !slices.Contains(dataFields, idents[0]) {
			return fmt.Errorf("field .%s is not allowed", strings.Join(idents, "."))
		}
		i = 1
		if idents[0] == "Window" {
			if len(idents) < 2 || !slices.Contains(windowFields, idents[1]) {
				return fmt.Errorf("field .%s is not allowed", strings.Join(idents, "."))
			}
			i = 2
		}
	}
	for ; i < len(idents); i++ {
		if !slices.Contains(timeMethods, idents[i]) {
			return fmt.Errorf("method .%s in .%s is not allowed", idents[i], strings.Join(idents, "."))
		}
	}
	return nil
}

// capWriter fails a rendering whose output passes the limit or that takes too long.
type capWriter struct {
	b        strings.Builder
	n        int // characters written
	limit    int
	deadline time.Time
}

var errOutputTooLong = errors.New("output too long")

func (w *capWriter) Write(p []byte) (int, error) {
	n := utf8.RuneCount(p)
	if w.n+n > w.limit {
		return 0, fmt.Errorf("%w: over %d characters", errOutputTooLong, w.limit)
	}
	if time.Now().After(w.deadline) {
		return 0, fmt.Errorf("rendering took over %v", RenderTimeout)
	}
	w.n += n
	return w.b.Write(p)
}

// Render checks and executes one template field, its output at most limit characters. Unknown
// fields and functions are errors, so a typo is reported when the schedule is created, not when
// the first run reads a wrong key.
func Render(field, text string, limit int, d Data) (string, error) {
	tpl, err := Check(field, text, limit)
	if err != nil || tpl == nil {
		return text, err
	}
	w := &capWriter{limit: limit, deadline: time.Now().Add(RenderTimeout)}
	if err := tpl.Execute(w, d); err != nil {
		return "", &TemplateError{field, err}
	}
	return w.b.String(), nil
}

// Field paths of the templated fields, as a schedule names them.
const (
	FieldKey        = "spec.template.spec.source.s3.key"
	FieldParameters = "spec.template.spec.source.metabase.parameters"
)

// RenderSpec is the run's spec: the template's spec with the S3 key and the Metabase parameter
// values rendered for d. Nothing else is a template. Errors are *TemplateError.
func RenderSpec(tpl v1alpha1.CsvIngestionSpec, d Data) (v1alpha1.CsvIngestionSpec, error) {
	spec := *tpl.DeepCopy()
	if s3 := spec.Source.S3; s3 != nil {
		key, err := Render(FieldKey, s3.Key, MaxKeyLength, d)
		if err != nil {
			return spec, err
		}
		if key == "" {
			return spec, &TemplateError{FieldKey, errors.New("renders to an empty key")}
		}
		s3.Key = key
	}
	if mb := spec.Source.Metabase; mb != nil {
		keys := make([]string, 0, len(mb.Parameters))
		for k := range mb.Parameters {
			keys = append(keys, k)
		}
		sort.Strings(keys) // the same error first every time
		for _, k := range keys {
			out, err := Render(FieldParameters+"."+k, mb.Parameters[k], MaxParameterLength, d)
			if err != nil {
				return spec, err
			}
			mb.Parameters[k] = out
		}
	}
	return spec, nil
}
