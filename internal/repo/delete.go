package repo

import (
	"context"
	"sync"
)

// deleteWorkers is how many deletes the collectors keep in flight.
const deleteWorkers = 8

// deleteEach calls del(i) for i in [0, n), deleteWorkers at a time, and
// returns how many succeeded and the bytes they freed. It goes on past a
// failure (each delete is independent, and what is left is deleted by the
// next collection) and returns the first; done, when not nil, is called
// with the count of successes after each one. It stops queueing when ctx
// ends and returns ctx's error, wrapped by stopped, if nothing failed.
func deleteEach(ctx context.Context, n int, del func(i int) (freed int64, err error), done func(int), stopped func(deleted int, err error) error) (int, int64, error) {
	var (
		mu    sync.Mutex
		ok    int
		freed int64
		first error
		wg    sync.WaitGroup
	)
	jobs := make(chan int)
	for range deleteWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				f, err := del(i)
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if err == nil {
					ok++
					freed += f
					if done != nil {
						done(ok)
					}
				}
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = stopped(ok, ctx.Err())
	}
	return ok, freed, first
}
