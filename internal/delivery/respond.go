package delivery

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// A webhook may be answered with the reply in its HTTP response (PROTOCOL.md
// section 6) instead of a REST post. The reply still comes out of the
// dispatcher, so that it is paced, in order with the room's other replies,
// and its job removed once it is out: the webhook's handler awaits it
// (Await) before it stores the job, the dispatcher offers the reply to it
// in place of Send, and the handler writes it and reports how that went.
// A reply nobody awaits any more (the handler's budget ran out, the process
// restarted) is sent through the API, or, for a job that may only be
// answered in the response (Job.ResponseOnly), buried with the reason.

// ErrNotTaken is what an offered reply gets from an Awaiting that stopped
// waiting for it.
var ErrNotTaken = errors.New("delivery: the request no longer waits for the reply")

// Awaiting is a webhook request waiting for the reply to its message.
type Awaiting struct {
	d      *Dispatcher
	key    string
	state  atomic.Int32 // awaitWaiting, awaitOffered or awaitGone
	offers chan offer   // holds the one offer
}

const (
	awaitWaiting = iota
	awaitOffered
	awaitGone
)

type offer struct {
	reply addon.Notification
	done  chan error // what became of the reply in the response
}

// awaiters maps a message (OAuthID and message id) to its Awaiting.
type awaiters struct {
	mu sync.Mutex
	m  map[string]*Awaiting
}

func awaitKey(oauthID, messageID string) string { return oauthID + "\x00" + messageID }

// Await registers the caller as the one to answer the message messageID of
// installation oauthID with its reply; call it before the message's job is
// stored, and then Wait or Cancel. It returns nil when another request
// awaits the same message already (HipChat sent it twice): that one answers
// it, and when the dispatcher does not deliver the installation's jobs
// (Options.Owns): the node that does makes the reply.
func (d *Dispatcher) Await(oauthID, messageID string) *Awaiting {
	if !d.owns(oauthID) {
		return nil
	}
	a := &Awaiting{d: d, key: awaitKey(oauthID, messageID), offers: make(chan offer, 1)}
	d.await.mu.Lock()
	defer d.await.mu.Unlock()
	if d.await.m[a.key] != nil {
		return nil
	}
	if d.await.m == nil {
		d.await.m = map[string]*Awaiting{}
	}
	d.await.m[a.key] = a
	return a
}

// Wait waits for the reply until ctx ends. With ok, the caller must write
// reply in its response and call written with the outcome (nil when it was
// written, else why not: the reply is then sent through the API, unless its
// job may only be answered in the response). Without ok, the reply was not
// ready in time and goes its way through the outbox.
func (a *Awaiting) Wait(ctx context.Context) (reply addon.Notification, written func(error), ok bool) {
	defer a.forget()
	select {
	case o := <-a.offers:
		return o.reply, func(err error) { o.done <- err }, true
	case <-ctx.Done():
	}
	if a.state.CompareAndSwap(awaitWaiting, awaitGone) {
		return addon.Notification{}, nil, false
	}
	o := <-a.offers // offered just now
	return o.reply, func(err error) { o.done <- err }, true
}

// Cancel stops waiting (the message's job was not stored, or was seen
// before); a reply offered meanwhile is told ErrNotTaken.
func (a *Awaiting) Cancel() {
	defer a.forget()
	if !a.state.CompareAndSwap(awaitWaiting, awaitGone) {
		(<-a.offers).done <- ErrNotTaken
	}
}

func (a *Awaiting) forget() {
	a.d.await.mu.Lock()
	if a.d.await.m[a.key] == a {
		delete(a.d.await.m, a.key)
	}
	a.d.await.mu.Unlock()
}

// offer hands n, the reply of j, to the request awaiting it, and reports
// whether it was written in that request's response; err says why not when
// a request took it and could not.
func (d *Dispatcher) offer(j addon.Job, n addon.Notification) (bool, error) {
	if j.MessageID == "" {
		return false, nil
	}
	d.await.mu.Lock()
	a := d.await.m[awaitKey(j.OAuthID, j.MessageID)]
	d.await.mu.Unlock()
	if a == nil || !a.state.CompareAndSwap(awaitWaiting, awaitOffered) {
		return false, nil
	}
	done := make(chan error, 1)
	a.offers <- offer{reply: n, done: done}
	err := <-done
	return err == nil, err
}
