package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"

	"github.com/rs/zerolog"
)

// profileEnv names a directory: when set, SIGUSR1 starts a CPU profile and
// SIGUSR2 writes it there as cpu-1.pprof, cpu-2.pprof… The bench
// (DRORCH_BENCH_PPROF) uses it to profile one step at a time; it is not a
// flag because operators have no use for it.
const profileEnv = "DRORCH_CPUPROFILE_DIR"

func profileOnSignal(log zerolog.Logger) {
	dir := os.Getenv(profileEnv)
	if dir == "" {
		return
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		var f *os.File
		n := 0
		for s := range sigs {
			switch {
			case s == syscall.SIGUSR1 && f == nil:
				n++
				var err error
				if f, err = os.Create(filepath.Join(dir, fmt.Sprintf("cpu-%d.pprof", n))); err != nil {
					log.Warn().Err(err).Msg("cpu profile")
					continue
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					log.Warn().Err(err).Msg("cpu profile")
					f.Close()
					f = nil
				}
			case s == syscall.SIGUSR2 && f != nil:
				pprof.StopCPUProfile()
				if err := f.Close(); err != nil {
					log.Warn().Err(err).Msg("cpu profile")
				}
				f = nil
			}
		}
	}()
}
