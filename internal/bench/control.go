package bench

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// Control measures the control plane on the socket (B1), start-up with
// many volumes in state (B3) and memory (B5). cycles is the number of
// Create/Mount/Unmount/Remove cycles, volumes the population for Get,
// List, start-up and memory.
func Control(p *Plugin, cycles, volumes int) ([]Row, error) {
	rows, err := cyclesRows(p, cycles)
	if err != nil {
		return nil, err
	}
	if err := populate(p, volumes); err != nil {
		return nil, err
	}
	more, err := readRows(p, volumes)
	if err != nil {
		return nil, err
	}
	rows = append(rows, more...)
	rss, err := p.RSS()
	if err != nil {
		return nil, err
	}
	rows = append(rows, atMost(Row{ID: "B5", Name: fmt.Sprintf("plugin RSS, %d volumes", volumes),
		Value: float64(rss) / (1 << 20), Unit: "MiB"}, 64, "< 64 MiB"))
	same, err := startup(p, 5, false)
	if err != nil {
		return nil, err
	}
	reboot, err := startup(p, 5, true)
	if err != nil {
		return nil, err
	}
	return append(rows,
		atMost(Row{ID: "B3", Name: fmt.Sprintf("start-up to first answer, %d volumes, same boot (median of 5)", volumes),
			Value: ms(same), Unit: "ms"}, 1000, "< 1 s"),
		atMost(Row{ID: "B3", Name: fmt.Sprintf("start-up to first answer, %d volumes in use, after a reboot (median of 5)", volumes),
			Value: ms(reboot), Unit: "ms"}, 1000, "< 1 s")), nil
}

// cyclesRows runs Create/Mount/Unmount/Remove of local volumes.
func cyclesRows(p *Plugin, n int) ([]Row, error) {
	ops := []string{"Create", "Mount", "Unmount", "Remove"}
	lat := make(map[string]durations, len(ops))
	begin := time.Now()
	for i := range n {
		name, id := fmt.Sprintf("cycle-%d", i), fmt.Sprintf("%032x", rand.Uint64())
		steps := []func() error{
			func() error { return p.Create(name, nil) },
			func() error { _, err := p.Mount(name, id); return err },
			func() error { return p.Unmount(name, id) },
			func() error { return p.Remove(name) },
		}
		for j, step := range steps {
			t := time.Now()
			if err := step(); err != nil {
				return nil, fmt.Errorf("cycle %d %s: %w", i, ops[j], err)
			}
			lat[ops[j]] = append(lat[ops[j]], time.Since(t))
		}
	}
	total := time.Since(begin)
	rows := []Row{{ID: "B1", Name: fmt.Sprintf("local Create/Mount/Unmount/Remove, %d cycles", n),
		Value: float64(4*n) / total.Seconds(), Unit: "ops/s"}}
	for _, op := range ops {
		rows = append(rows,
			Row{ID: "B1", Name: op + " p50", Value: ms(lat[op].pct(50)), Unit: "ms"},
			Row{ID: "B1", Name: op + " p99", Value: ms(lat[op].pct(99)), Unit: "ms"})
	}
	return rows, nil
}

// populate creates n local volumes from a few concurrent clients.
func populate(p *Plugin, n int) error {
	const workers = 8
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if err := p.Create(volName(i), nil); err != nil {
					errs <- fmt.Errorf("populate: %w", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func volName(i int) string { return fmt.Sprintf("vol-%05d", i) }

// readRows measures Get and List with n volumes.
func readRows(p *Plugin, n int) ([]Row, error) {
	var get durations
	for range 2000 {
		t := time.Now()
		if err := p.Client.Call("VolumeDriver.Get", map[string]string{"Name": volName(rand.IntN(n))}, nil); err != nil {
			return nil, fmt.Errorf("get: %w", err)
		}
		get = append(get, time.Since(t))
	}
	// List is timed until its whole answer has arrived; decoding it is the
	// client's work (and costs more than the answer itself).
	var list durations
	for range 50 {
		t := time.Now()
		status, body, err := p.Client.Post("VolumeDriver.List", struct{}{})
		list = append(list, time.Since(t))
		if err != nil || status != http.StatusOK {
			return nil, fmt.Errorf("list: HTTP %d, %v: %.200s", status, err, body)
		}
		if got := bytes.Count(body, []byte(`"Name":`)); got != n {
			return nil, fmt.Errorf("list: %d volumes, want %d", got, n)
		}
	}
	return []Row{
		{ID: "B1", Name: fmt.Sprintf("Get p50, %d volumes", n), Value: ms(get.pct(50)), Unit: "ms"},
		atMost(Row{ID: "B1", Name: fmt.Sprintf("Get p99, %d volumes", n), Value: ms(get.pct(99)), Unit: "ms"}, 1, "< 1 ms"),
		{ID: "B1", Name: fmt.Sprintf("List p50, %d volumes", n), Value: ms(list.pct(50)), Unit: "ms"},
		atMost(Row{ID: "B1", Name: fmt.Sprintf("List p99, %d volumes", n), Value: ms(list.pct(99)), Unit: "ms"}, 20, "< 20 ms"),
	}, nil
}

// startup restarts the plugin (SIGTERM, as dockerd stops it) rounds times
// and returns the median time until the socket answered. With reboot, the
// state is made to look as if the machine had rebooted while every volume
// was in use before each start (simulateReboot).
func startup(p *Plugin, rounds int, reboot bool) (time.Duration, error) {
	var d durations
	for range rounds {
		if err := p.Stop(); err != nil {
			return 0, err
		}
		if reboot {
			if err := simulateReboot(p.Dir); err != nil {
				return 0, err
			}
		}
		t, err := p.Start()
		if err != nil {
			return 0, err
		}
		d = append(d, t)
	}
	return d.pct(50), nil
}
