package store

import (
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// groupCommit runs the functions of concurrent writers in shared write
// transactions, so that many writes cost one commit and its fsyncs. The
// writes that arrive while a commit is on its way all go into the next
// one, at once; a write that arrives when nothing is being written waits
// delay for others to join it.
//
// It does what bolt's Batch does, but Batch cuts a batch when its timer
// fires and the batch then queues for the write lock: under load, batches
// of a millisecond's writes queued one behind the other, each paying a
// whole commit, and a write waited for a dozen of them (docs/performance.md).
type groupCommit struct {
	db    *bolt.DB
	delay time.Duration

	mu     sync.Mutex
	calls  []groupCall
	closed bool
	wake   chan struct{} // a call was queued; sent to with mu held
	stop   chan struct{}
	done   chan struct{}
}

type groupCall struct {
	fn  func(*bolt.Tx) error
	err chan error
}

// errSolo tells a caller whose function failed in a shared transaction to
// run it alone, to get its own error without failing the others.
var errSolo = errors.New("store: run the write alone")

func newGroupCommit(db *bolt.DB, delay time.Duration) *groupCommit {
	g := &groupCommit{db: db, delay: delay, wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go g.loop()
	return g
}

// run runs fn in a write transaction shared with other callers and returns
// once it is committed (nil) or failed. Like bolt's Batch, fn may run more
// than once (when another function of its transaction fails) and must be
// idempotent.
func (g *groupCommit) run(fn func(*bolt.Tx) error) error {
	c := groupCall{fn: fn, err: make(chan error, 1)}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return berrors.ErrDatabaseNotOpen
	}
	g.calls = append(g.calls, c)
	select {
	case g.wake <- struct{}{}:
	default:
	}
	g.mu.Unlock()
	err := <-c.err
	if err == errSolo {
		err = g.db.Update(fn)
	}
	return err
}

// close commits what is queued and stops; later calls fail with
// ErrDatabaseNotOpen.
func (g *groupCommit) close() {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	g.mu.Unlock()
	close(g.stop)
	<-g.done
}

func (g *groupCommit) loop() {
	defer close(g.done)
	for {
		if calls := g.take(); calls != nil {
			g.commit(calls)
			continue
		}
		select {
		case <-g.wake:
			// Nothing was being written: let others join this write.
			time.Sleep(g.delay)
		case <-g.stop:
			if calls := g.take(); calls != nil {
				g.commit(calls)
			}
			return
		}
	}
}

// take returns the queued calls, or nil.
func (g *groupCommit) take() []groupCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	calls := g.calls
	g.calls = nil
	select {
	case <-g.wake: // they are taken: no need to wake for them
	default:
	}
	return calls
}

// commit runs calls in one transaction. If one fails, it is told to run
// alone and the others are run again without it.
func (g *groupCommit) commit(calls []groupCall) {
	for len(calls) > 0 {
		failed := -1
		err := g.db.Update(func(tx *bolt.Tx) error {
			for i, c := range calls {
				if err := safely(c.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, c := range calls {
				c.err <- err
			}
			return
		}
		calls[failed].err <- errSolo
		calls = append(calls[:failed], calls[failed+1:]...)
	}
}

// safely calls fn, turning a panic into an error.
func safely(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: write panicked: %v", p)
		}
	}()
	return fn(tx)
}
