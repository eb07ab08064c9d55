// Package bench measures holdfast: its control plane on the socket and
// through dockerd, start-up and memory with many volumes, and the data
// path of each volume type against the same backend without holdfast,
// side by side in one run. cmd/holdfast-bench runs it (make bench).
package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Row is one measured figure.
type Row struct {
	// ID is the name for the measure (B1 ... B5, C for ceilings).
	ID   string `json:"id"`
	Name string `json:"measure"`
	// Value is holdfast's figure; Base, when set, is the same measure
	// without holdfast (or with Docker's local driver), measured in the
	// same run, and Ratio is Value/Base oriented so that 1 means "as fast".
	Value float64  `json:"value"`
	Base  *float64 `json:"base,omitempty"`
	Ratio *float64 `json:"ratio,omitempty"`
	Unit  string   `json:"unit"`
	// Target is the goal in words; Met says whether it holds.
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
	Note   string `json:"note,omitempty"`
	// Paired, for a ratio measured in pairs, is its interval and samples.
	*Paired
}

// Report is everything one run measured.
type Report struct {
	Started time.Time `json:"started"`
	Host    string    `json:"host"`
	Rows    []Row     `json:"rows"`
	Errors  []string  `json:"errors,omitempty"`
}

// NewReport starts a report describing this machine.
func NewReport() *Report {
	return &Report{Started: time.Now().UTC().Truncate(time.Second), Host: hostInfo()}
}

func hostInfo() string {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("linux %s, %d CPUs, %s", strings.TrimSpace(string(kernel)), runtime.NumCPU(), runtime.Version())
}

// Add appends rows.
func (r *Report) Add(rows ...Row) { r.Rows = append(r.Rows, rows...) }

// Fail records a suite that could not run.
func (r *Report) Fail(suite string, err error) {
	r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", suite, err))
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// WriteTable prints the report as a table.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "holdfast benchmarks, %s, %s\n\n", r.Started.Format(time.RFC3339), r.Host)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "id\tmeasure\tholdfast\twithout\tratio\ttarget\tmet")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", row.ID, row.Name,
			format(row.Value, row.Unit), formatPtr(row.Base, row.Unit), ratioCell(row), row.Target, verdict(row))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, row := range r.Rows {
		if row.Note != "" {
			fmt.Fprintf(w, "  %s %s: %s\n", row.ID, row.Name, row.Note)
		}
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "FAILED %s\n", e)
	}
	return nil
}

func format(v float64, unit string) string {
	switch {
	case unit == "":
		return fmt.Sprintf("%.3f", v)
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	default:
		return fmt.Sprintf("%.3g %s", v, unit)
	}
}

func formatPtr(v *float64, unit string) string {
	if v == nil {
		return "-"
	}
	return format(*v, unit)
}

func ratioCell(row Row) string {
	if row.Paired == nil || row.Ratio == nil {
		return formatPtr(row.Ratio, "")
	}
	return fmt.Sprintf("%.3f [%.3f, %.3f]", *row.Ratio, row.CILow, row.CIHigh)
}

func verdict(row Row) string {
	switch {
	case row.Paired == nil || row.Verdict == "":
		return met(row.Met)
	case row.Verdict == Met:
		return "yes"
	case row.Verdict == Unsteady:
		return "UNSTABLE"
	default:
		return "NO"
	}
}

func met(m *bool) string {
	switch {
	case m == nil:
		return ""
	case *m:
		return "yes"
	default:
		return "NO"
	}
}

// ptr returns a pointer to v.
func ptr[T any](v T) *T { return &v }

// atMost and atLeast fill a row's target and verdict.
func atMost(row Row, limit float64, target string) Row {
	row.Target, row.Met = target, ptr(valueFor(row) <= limit)
	return row
}

func atLeast(row Row, limit float64, target string) Row {
	row.Target, row.Met = target, ptr(valueFor(row) >= limit)
	return row
}

// valueFor is what a target applies to: the ratio when there is one.
func valueFor(row Row) float64 {
	if row.Ratio != nil {
		return *row.Ratio
	}
	return row.Value
}

// compared builds a row for value against base; higherIsBetter orients the
// ratio so that it reads "holdfast's speed as a fraction of the baseline's"
// for rates, and "holdfast's cost as a multiple of the baseline's" for times.
func compared(id, name string, value, base float64, unit string) Row {
	return Row{ID: id, Name: name, Value: value, Base: ptr(base), Ratio: ptr(value / base), Unit: unit}
}

// durations summarises latencies.
type durations []time.Duration

func (d durations) pct(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (d durations) sum() time.Duration {
	var t time.Duration
	for _, x := range d {
		t += x
	}
	return t
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// RowsPrefix starts the lines on which a part of the benchmarks that runs
// elsewhere (the qemu guest: pgbench on LUKS) prints its rows as JSON,
// for the host's report to take them in (holdfast-bench -merge).
const RowsPrefix = "holdfast-bench-rows: "

// WriteRowsLine prints rows on one line after RowsPrefix.
func WriteRowsLine(w io.Writer, rows []Row) error {
	b, err := json.Marshal(rows)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s%s\n", RowsPrefix, b)
	return err
}

// ReadRowsLines returns the rows of every RowsPrefix line in r (other
// lines are skipped: the guest's output has the tests' too).
func ReadRowsLines(r io.Reader) ([]Row, error) {
	var rows []Row
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		_, line, ok := strings.Cut(sc.Text(), RowsPrefix)
		if !ok {
			continue
		}
		var rs []Row
		if err := json.Unmarshal([]byte(line), &rs); err != nil {
			return nil, fmt.Errorf("rows line: %w", err)
		}
		rows = append(rows, rs...)
	}
	return rows, sc.Err()
}

// Merge adds rows to the report, each replacing a row of the same id and
// measure (so that merging a second time changes nothing).
func (r *Report) Merge(rows []Row) {
	for _, row := range rows {
		i := slices.IndexFunc(r.Rows, func(x Row) bool { return x.ID == row.ID && x.Name == row.Name })
		if i >= 0 {
			r.Rows[i] = row
		} else {
			r.Rows = append(r.Rows, row)
		}
	}
}
