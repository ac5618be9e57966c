package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/delivery"
	"github.com/hipconnect/hipconnect/internal/pgstore"
	"github.com/prometheus/client_golang/prometheus"
)

// Lease timing of a node on PostgreSQL. A node renews its leases every
// leaseEvery for leaseTTL (on the database's clock) and stops delivering
// an installation leaseTTL-leaseMargin after the start of its last
// successful round (on its own clock), before any other node may claim
// it; a node killed loses its leases leaseTTL after its last round, and
// another takes them over at its next round.
const (
	leaseTTL    = 15 * time.Second
	leaseEvery  = 3 * time.Second
	leaseMargin = 4 * time.Second
	// pollEvery is the safety net under LISTEN/NOTIFY: the outbox is read
	// again this often whatever the notifications said.
	pollEvery = 30 * time.Second
	// kickGap is the least time between two rounds run for jobs of
	// installations no node held at the last round (new ones): the kicks
	// of a burst of installs make one round.
	kickGap = 100 * time.Millisecond
)

// cluster makes the dispatcher of one node of several sharing a
// PostgreSQL store deliver the installations the node holds a lease on,
// and tells it of the jobs every node commits (LISTEN/NOTIFY), so that an
// installation's jobs, rooms, flood control and token budget are one
// node's at a time.
type cluster struct {
	db   *pgstore.DB
	node string
	disp *delivery.Dispatcher
	log  *slog.Logger
	now  func() time.Time

	mu        sync.Mutex
	held      map[string]bool // the leases of the last successful round
	elsewhere map[string]bool // other nodes' leases at that round
	until     time.Time       // when they are to be taken as lost, on our clock
	kick      chan struct{}   // run a lease round now

	leases prometheus.Gauge
	rounds *prometheus.CounterVec
}

// nodeName names this process among the nodes: the host name and a random
// suffix, so that two processes on one host (or a restarted one) are never
// taken for each other.
func nodeName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}

func newCluster(db *pgstore.DB, reg prometheus.Registerer, log *slog.Logger, now func() time.Time) *cluster {
	node := nodeName()
	c := &cluster{db: db, node: node, log: log.With(slog.String("node", node)), now: now, kick: make(chan struct{}, 1),
		leases: prometheus.NewGauge(prometheus.GaugeOpts{Name: "hipconnect_cluster_leases_held",
			Help: "Installations whose jobs this node delivers (storage.backend postgres)."}),
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hipconnect_cluster_lease_rounds_total",
			Help: "Lease rounds with the database, by result (ok, error)."}, []string{"result"}),
	}
	reg.MustRegister(c.leases, c.rounds, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hipconnect_cluster_node_info",
		Help: "This node's name among the nodes sharing the database.", ConstLabels: prometheus.Labels{"node": c.node}},
		func() float64 { return 1 }), poolCollector{db})
	return c
}

// Owns reports whether this node delivers installation oauthID's jobs: it
// held its lease at the last round, and that round is recent enough.
func (c *cluster) Owns(oauthID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held[oauthID] && c.now().Before(c.until)
}

// run keeps the leases and the notifications until ctx ends. Call release
// once the dispatcher has stopped.
func (c *cluster) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { c.listen(ctx) })
	t := time.NewTicker(leaseEvery)
	defer t.Stop()
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	for {
		c.round(ctx)
		last := c.now()
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
		case <-c.kick:
			select {
			case <-ctx.Done():
			case <-time.After(kickGap - c.now().Sub(last)): // at once when the gap has passed
			}
		case <-poll.C:
			c.disp.Wake()
		}
	}
}

// round renews and claims leases and tells the dispatcher what it gained.
func (c *cluster) round(ctx context.Context) {
	start := c.now()
	// A round that hangs (a connection lost without a reset) must not
	// outlast the leases: past their local end this node delivers nothing.
	roundCtx, cancel := context.WithTimeout(ctx, leaseTTL-leaseMargin-leaseEvery)
	defer cancel()
	l, err := c.db.Lease(roundCtx, c.node, leaseTTL)
	if err != nil {
		if ctx.Err() == nil {
			c.rounds.WithLabelValues("error").Inc()
			c.log.Warn("cluster: lease round failed; this node stops delivering when its leases run out", slog.Any("err", err))
		}
		return
	}
	c.rounds.WithLabelValues("ok").Inc()
	held := map[string]bool{}
	for _, id := range l.Held {
		held[id] = true
	}
	c.mu.Lock()
	var gained []string
	// What we held ran out before now (rounds failed or this one was
	// slow): jobs told meanwhile were dropped as another node's, so all of
	// it is new, to be read again.
	lapsed := !c.now().Before(c.until)
	for id := range held {
		if lapsed || !c.held[id] {
			gained = append(gained, id)
		}
	}
	c.held, c.until = held, start.Add(leaseTTL-leaseMargin)
	c.elsewhere = make(map[string]bool, len(l.Elsewhere))
	for _, id := range l.Elsewhere {
		c.elsewhere[id] = true
	}
	c.mu.Unlock()
	c.leases.Set(float64(len(held)))
	if len(gained) > 0 {
		slices.Sort(gained)
		c.log.Info("cluster: delivering for more installations", slog.Int("gained", len(gained)), slog.Int("held", len(held)), slog.Int("nodes", l.Nodes))
		c.disp.Claimed(gained...)
	}
}

// listen tells the dispatcher of every job committed by any node for an
// installation this node holds, in commit order, and runs a lease round
// at once for a job nobody may hold yet (a new installation). After each
// (re)connection the dispatcher reads the outbox again: what was committed
// while not listening is found there.
func (c *cluster) listen(ctx context.Context) {
	for ctx.Err() == nil {
		err := c.db.Listen(ctx, c.disp.Wake, c.wants, func(j addon.Job) {
			if c.wants(j.OAuthID) {
				c.disp.Added(j)
			}
		})
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("cluster: listening for new jobs failed; listening again in 1s", slog.Any("err", err))
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// wants reports whether this node delivers installation oauthID's jobs,
// and when no node held it at the last round, has a lease round run: the
// installation may be new, held by nobody yet.
func (c *cluster) wants(oauthID string) bool {
	if c.Owns(oauthID) {
		return true
	}
	c.mu.Lock()
	theirs := c.elsewhere[oauthID]
	c.mu.Unlock()
	if !theirs {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return false
}

// release gives the leases up at a clean stop, once nothing is in flight,
// so that the other nodes take them over at their next round.
func (c *cluster) release() {
	c.mu.Lock()
	held := len(c.held)
	c.held = nil
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.db.ReleaseLeases(ctx, c.node); err != nil {
		c.log.Warn("cluster: leases not released; the other nodes take them over when they run out", slog.Int("held", held), slog.Any("err", err))
	}
}

// poolCollector exports the connection pool of the PostgreSQL store.
type poolCollector struct{ db *pgstore.DB }

var poolDesc = prometheus.NewDesc("hipconnect_db_pool_connections", "Connections of the PostgreSQL pool, by state (acquired, idle, total, max).", []string{"state"}, nil)

func (p poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- poolDesc }

func (p poolCollector) Collect(ch chan<- prometheus.Metric) {
	acquired, idle, total, maxConns := p.db.PoolStats()
	for state, n := range map[string]int32{"acquired": acquired, "idle": idle, "total": total, "max": maxConns} {
		ch <- prometheus.MustNewConstMetric(poolDesc, prometheus.GaugeValue, float64(n), state)
	}
}
