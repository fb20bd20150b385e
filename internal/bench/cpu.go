package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// meter, with DRORCH_BENCH_PPROF, reads the CPU time the worker and each
// MinIO spent in a step, so that a step's wall time can be laid beside
// where the machine's CPU went (the tools' own CPU comes from their rusage).
var meter *cpuMeter

type cpuMeter struct {
	names []string
	pids  map[string]int
}

// newCPUMeter finds the MinIO servers' processes by their --address.
func newCPUMeter(workerPID int, minioAddrs map[string]string) *cpuMeter {
	m := &cpuMeter{names: []string{"worker"}, pids: map[string]int{"worker": workerPID}}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for site, addr := range minioAddrs {
		for _, p := range procs {
			b, err := os.ReadFile(p)
			if err != nil || !bytes.Contains(b, []byte("minio")) || !bytes.Contains(b, []byte("\x00"+addr+"\x00")) {
				continue
			}
			pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
			m.names = append(m.names, "minio-"+site)
			m.pids["minio-"+site] = pid
		}
	}
	return m
}

// snap returns each process's user+system CPU time so far.
func (m *cpuMeter) snap() map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, pid := range m.pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command, which is in parentheses: utime is the
		// 14th field of the line, stime the 15th, in clock ticks (100/s).
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		out[name] = time.Duration(u+s) * 10 * time.Millisecond
	}
	return out
}

// since says how much CPU each process spent since before, and extra (a
// tool's own) first when given.
func (m *cpuMeter) since(before map[string]time.Duration, extra ...string) string {
	now := m.snap()
	parts := append([]string{}, extra...)
	for _, n := range m.names {
		parts = append(parts, fmt.Sprintf("%s %s", n, dur(now[n]-before[n])))
	}
	return "CPU: " + strings.Join(parts, ", ")
}
