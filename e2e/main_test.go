package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// skipMessage says why the package does nothing by default.
const skipMessage = "set HOLDFAST_E2E=1 (make e2e) to run against a real dockerd"

// labelKey marks every container and named volume the suite creates, so a
// run that was killed can be swept up by the next one.
const labelKey = "holdfast-e2e"

var (
	enabled     bool
	repoRoot    string   // the work tree
	holdfastBin string   // static bin/holdfast
	testImage   string   // busybox image from hack/docker.sh
	composeCmd  []string // "docker compose" or "docker-compose"
	dockerdLog  string   // where hack/docker.sh logs dockerd (managed plugin logs land there)
	dockerRoot  string   // dockerd's root folder, e.g. /var/lib/docker
	serverAPI   string   // dockerd's API version, e.g. 1.41
	runID       string   // random, names this run's objects
	workDir     string   // parent of the fixtures' folders
)

func TestMain(m *testing.M) {
	if os.Getenv("HOLDFAST_E2E") != "1" {
		fmt.Println("e2e: skipped: " + skipMessage)
		os.Exit(m.Run()) // every test skips itself with the same message
	}
	enabled = true
	if err := setup(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: setup failed: %v\n", err)
		os.Exit(1)
	}
	start := time.Now()
	code := m.Run()
	fmt.Printf("e2e: scenarios took %s\n", time.Since(start).Round(time.Second))
	if code == 0 && os.Getenv("HOLDFAST_E2E_KEEP") != "1" && len(mountsUnder(workDir)) == 0 {
		_ = os.RemoveAll(workDir)
	} else {
		fmt.Printf("e2e: logs and state kept in %s\n", workDir)
	}
	os.Exit(code)
}

// requireE2E skips t unless the suite is enabled.
func requireE2E(t *testing.T) {
	t.Helper()
	if !enabled {
		t.Skip(skipMessage)
	}
}

func setup() error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	repoRoot = filepath.Dir(wd)
	testImage = envOr("HOLDFAST_TEST_IMAGE", "holdfast-test:latest")
	dockerdLog = envOr("HOLDFAST_DOCKERD_LOG", "/var/log/holdfast-dockerd.log")
	holdfastBin = envOr("HOLDFAST_BIN", filepath.Join(repoRoot, "bin", "holdfast"))
	if _, err := os.Stat(holdfastBin); err != nil {
		return fmt.Errorf("%s missing: build it first (make build, or e2e/run.sh does it)", holdfastBin)
	}
	if os.Getuid() != 0 {
		return fmt.Errorf("the e2e suite runs as root (it starts a volume daemon and mounts)")
	}
	// Engine, test image and compose tool: idempotent, fast once done.
	if os.Getenv("HOLDFAST_E2E_NO_SETUP") != "1" {
		cmd := exec.Command(filepath.Join(repoRoot, "hack", "docker.sh"), "up")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("hack/docker.sh up: %v", err)
		}
	}
	ctx := context.Background()
	out, err := run(ctx, nil, filepath.Join(repoRoot, "hack", "docker.sh"), "compose-cmd")
	if err != nil {
		return err
	}
	composeCmd = strings.Fields(out)
	if dockerRoot, err = run(ctx, nil, "docker", "info", "--format", "{{.DockerRootDir}}"); err != nil {
		return err
	}
	if serverAPI, err = run(ctx, nil, "docker", "version", "--format", "{{.Server.APIVersion}}"); err != nil {
		return err
	}
	if _, err := run(ctx, nil, "docker", "image", "inspect", testImage); err != nil {
		return fmt.Errorf("test image %s missing (hack/docker.sh image): %v", testImage, err)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	runID = hex.EncodeToString(b)
	if workDir, err = os.MkdirTemp(os.Getenv("HOLDFAST_E2E_DIR"), "holdfast-e2e-"); err != nil {
		return err
	}
	sweep(ctx)
	fmt.Printf("e2e: docker API %s, image %s, compose %q, binary %s, work dir %s\n",
		serverAPI, testImage, strings.Join(composeCmd, " "), holdfastBin, workDir)
	return nil
}

// sweep removes what a killed earlier run left: labelled containers and volumes.
func sweep(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if ids, _ := run(ctx, nil, "docker", "ps", "-aq", "--filter", "label="+labelKey); ids != "" {
		fmt.Printf("e2e: removing containers left by an earlier run: %s\n", strings.Join(strings.Fields(ids), " "))
		_, _ = run(ctx, nil, "docker", append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
	}
	if vols, _ := run(ctx, nil, "docker", "volume", "ls", "-q", "--filter", "label="+labelKey); vols != "" {
		fmt.Printf("e2e: removing volumes left by an earlier run: %s\n", strings.Join(strings.Fields(vols), " "))
		_, _ = run(ctx, nil, "docker", append([]string{"volume", "rm", "-f"}, strings.Fields(vols)...)...)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// apiAtLeast reports whether dockerd's API version is at least 1.minor.
func apiAtLeast(minor int) bool {
	_, m, ok := strings.Cut(serverAPI, ".")
	n, err := strconv.Atoi(m)
	return ok && err == nil && n >= minor
}
