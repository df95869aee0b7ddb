package notify

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type recorder struct {
	mu     sync.Mutex
	got    [][]Alert
	fail   int // fail this many calls first (retryable)
	block  chan struct{}
	resend time.Duration
	calls  int
}

func (r *recorder) Name() string { return "rec" }
func (r *recorder) Notify(ctx context.Context, as []Alert) (bool, error) {
	if r.block != nil {
		select {
		case <-r.block:
		case <-ctx.Done():
			return true, ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.fail > 0 {
		r.fail--
		return true, errors.New("boom")
	}
	r.got = append(r.got, as)
	return false, nil
}

type resender struct{ *recorder }

func (r resender) ResendInterval() time.Duration { return time.Minute }

func TestRetriesThenDelivers(t *testing.T) {
	r := &recorder{fail: 2}
	d := NewDispatcher(DispatcherConfig{QueueSize: 4, Timeout: time.Second, MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, MaxAttempts: 5}, []Notifier{r}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	d.Send([]Alert{{Rule: "a"}})
	d.Resend([]Alert{{Rule: "ignored: not a resender"}})
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.got)
		r.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not delivered")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if r.calls != 3 || len(r.got) != 1 || r.got[0][0].Rule != "a" {
		t.Fatalf("calls %d got %+v", r.calls, r.got)
	}
	if d.ResendInterval() != 0 {
		t.Fatal("resend interval without resenders")
	}
}

// A receiver that hangs never blocks Send: the queue drops its oldest batch.
func TestSendNeverBlocks(t *testing.T) {
	r := &recorder{block: make(chan struct{})}
	rs := resender{&recorder{}}
	d := NewDispatcher(DispatcherConfig{QueueSize: 3, Timeout: time.Hour, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxAttempts: 1}, []Notifier{r, rs}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	for i := range 100 {
		d.Send([]Alert{{Rule: string(rune('a' + i%26))}})
	}
	if d.ResendInterval() != time.Minute {
		t.Fatal(d.ResendInterval())
	}
	if p := d.Pending(); p > 6 {
		t.Fatalf("pending %d: queue not bounded", p)
	}
	close(r.block)
	cancel()
	<-done
}
