package metrics

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Children caches the children of a metric vector by key, so that a hot
// path resolves each child once rather than hashing and looking up its
// label values on every observation. A child is resolved on first use, as
// WithLabelValues would create it: a label value never used never shows in
// the exposition. Keys must come from a small set, as label values do.
// Children must not be used on a vector whose children are deleted or
// reset. It is safe for concurrent use.
type Children[K comparable, M any] struct {
	resolve func(K) M
	mu      sync.Mutex              // serialises additions
	known   atomic.Pointer[map[K]M] // read without locking, replaced whole on addition
}

// NewChildren returns an empty cache that resolves a missing child with
// resolve, e.g. func(code int) prometheus.Observer { return
// vec.WithLabelValues(route, strconv.Itoa(code)) }.
func NewChildren[K comparable, M any](resolve func(K) M) *Children[K, M] {
	return &Children[K, M]{resolve: resolve}
}

// Get returns the child for k, resolving it on first use.
func (c *Children[K, M]) Get(k K) M {
	if m := c.known.Load(); m != nil {
		if child, ok := (*m)[k]; ok {
			return child
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[K]M
	if m := c.known.Load(); m != nil {
		old = *m
	}
	if child, ok := old[k]; ok {
		return child
	}
	child := c.resolve(k)
	m := make(map[K]M, len(old)+1)
	maps.Copy(m, old)
	m[k] = child
	c.known.Store(&m)
	return child
}
