package main

// The test server takes a testing.TB-like value (ktesting.TB) for its logs, its clean-ups and
// its failures: this one, outside `go test`, logs to stderr and runs the clean-ups at exit.

import (
	"fmt"
	"os"
	"sync"
)

type testingT struct {
	mu       sync.Mutex
	cleanups []func()
	failed   bool
	tempDirs []string
}

func newTestingT() *testingT { return &testingT{} }

// cleanUp runs the registered clean-ups, last first, and removes the temporary folders.
func (t *testingT) cleanUp() {
	t.mu.Lock()
	cleanups, dirs := t.cleanups, t.tempDirs
	t.cleanups, t.tempDirs = nil, nil
	t.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	for _, dir := range dirs {
		_ = os.RemoveAll(dir)
	}
}

func (t *testingT) Attr(key, value string) {}
func (t *testingT) Chdir(dir string)       { t.Fatalf("Chdir(%q) is not supported", dir) }
func (t *testingT) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}
func (t *testingT) Error(args ...any) {
	t.Log(append([]any{"error:"}, args...)...)
	t.Fail()
}
func (t *testingT) Errorf(format string, args ...any) {
	t.Logf("error: "+format, args...)
	t.Fail()
}
func (t *testingT) Fail() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failed = true
}

// FailNow ends the process: the server cannot go on after a fatal error in its set-up.
func (t *testingT) FailNow() {
	fmt.Fprintln(os.Stderr, "apiserver: fatal error in the test server")
	os.Exit(1)
}
func (t *testingT) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}
func (t *testingT) Fatal(args ...any) {
	t.Log(append([]any{"fatal:"}, args...)...)
	t.FailNow()
}
func (t *testingT) Fatalf(format string, args ...any) {
	t.Logf("fatal: "+format, args...)
	t.FailNow()
}
func (t *testingT) Helper()         {}
func (t *testingT) Log(args ...any) { fmt.Fprintln(os.Stderr, append([]any{"apiserver:"}, args...)...) }
func (t *testingT) Logf(f string, args ...any) {
	fmt.Fprintf(os.Stderr, "apiserver: "+f+"\n", args...)
}
func (t *testingT) Name() string                { return "testkit-apiserver" }
func (t *testingT) Setenv(key, value string)    { _ = os.Setenv(key, value) }
func (t *testingT) Skip(args ...any)            { t.Fatal(append([]any{"skip:"}, args...)...) }
func (t *testingT) Skipf(f string, args ...any) { t.Fatalf("skip: "+f, args...) }
func (t *testingT) SkipNow()                    { t.Fatal("skip") }
func (t *testingT) Skipped() bool               { return false }
func (t *testingT) TempDir() string {
	dir, err := os.MkdirTemp("", "testkit-apiserver-tmp-")
	if err != nil {
		t.Fatalf("TempDir: %v", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tempDirs = append(t.tempDirs, dir)
	return dir
}
