// Command holdfast-bench measures holdfast (make bench): it prints a table
// of figures, ratios against the same work without holdfast and targets,
// and writes the same as JSON.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/holdfast/holdfast/internal/bench"
)

func main() {
	c := bench.Full()
	bin := flag.String("bin", "bin/holdfast", "holdfast binary to measure")
	dir := flag.String("dir", "/var/tmp/holdfast-bench", "work directory, on the disk to measure; removed at the end")
	out := flag.String("out", "bin/bench.json", "where to write the JSON report")
	chart := flag.String("chart", "bin/bench.svg", `where to draw the ratios and their intervals (.svg, .png or .pdf); "" for none`)
	quick := flag.Bool("quick", false, "a small workload that checks every suite runs")
	docker := flag.String("docker", c.DockerSock, `dockerd's socket for B2 and pgbench; "" skips them`)
	only := flag.String("only", "", "comma-separated suites to run: ceilings, control (B1, B3, B5), docker (B2), data (B4), pgbench (DB: PostgreSQL in a container); default all")
	replot := flag.String("replot", "", "draw -chart from this JSON report instead of measuring")
	merge := flag.String("merge", "", "instead of measuring, take the rows printed in this log (the guest's part of make bench) into the report -out, print them and redraw -chart")
	flag.Parse()
	if *merge != "" {
		if err := mergeRows(*merge, *out, *chart); err != nil {
			fmt.Fprintln(os.Stderr, "holdfast-bench:", err)
			os.Exit(1)
		}
		return
	}
	if *replot != "" {
		if err := redraw(*replot, *chart); err != nil {
			fmt.Fprintln(os.Stderr, "holdfast-bench:", err)
			os.Exit(1)
		}
		return
	}
	if *quick {
		c = bench.Quick()
	}
	c.DockerSock = *docker
	if *only != "" {
		c.Only = strings.Split(*only, ",")
	}
	if err := run(c, *bin, *dir, *out, *chart); err != nil {
		fmt.Fprintln(os.Stderr, "holdfast-bench:", err)
		os.Exit(1)
	}
}

func run(c bench.Config, bin, dir, out, chart string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as root: the benchmarks mount filesystems and drop the page cache")
	}
	var err error
	if c.Bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	c.Dir = dir
	r := bench.Run(c, func(s string) { fmt.Fprintln(os.Stderr, "holdfast-bench: measuring", s) })
	if err := r.WriteTable(os.Stdout); err != nil {
		return err
	}
	if err := r.WriteJSON(out); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "holdfast-bench: JSON report in", out)
	if chart != "" {
		if err := r.WriteChart(chart); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "holdfast-bench: chart in", chart)
	}
	fmt.Fprintf(os.Stderr, "holdfast-bench: took %s\n", time.Since(r.Started).Round(time.Second))
	if len(r.Errors) > 0 {
		return fmt.Errorf("%d suites failed", len(r.Errors))
	}
	return nil
}

// mergeRows adds the rows printed in log to the report in out, prints
// them as a table and redraws the chart from the whole report.
func mergeRows(log, out, chart string) error {
	r, err := readReport(out)
	if err != nil {
		return err
	}
	f, err := os.Open(log)
	if err != nil {
		return err
	}
	defer f.Close()
	rows, err := bench.ReadRowsLines(f)
	if err != nil {
		return fmt.Errorf("%s: %w", log, err)
	}
	if len(rows) == 0 {
		return fmt.Errorf("%s: no %q line: the guest's benchmark did not finish (see the log)", log, strings.TrimSpace(bench.RowsPrefix))
	}
	r.Merge(rows)
	if err := (&bench.Report{Started: r.Started, Host: r.Host + " (rows from the qemu guest)", Rows: rows}).WriteTable(os.Stdout); err != nil {
		return err
	}
	if err := r.WriteJSON(out); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "holdfast-bench: %d rows from %s merged into %s\n", len(rows), log, out)
	if chart == "" {
		return nil
	}
	if err := r.WriteChart(chart); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "holdfast-bench: chart in", chart)
	return nil
}

func readReport(path string) (*bench.Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r bench.Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// redraw draws the chart of an earlier run from its JSON report.
func redraw(report, chart string) error {
	r, err := readReport(report)
	if err != nil {
		return err
	}
	return r.WriteChart(chart)
}
