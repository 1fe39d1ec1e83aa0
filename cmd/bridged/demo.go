package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"

	"github.com/bridged/bridged/cache"
)

var demoLines = []string{
	"build #%d passed", "new comment on ticket %d", "%d people are viewing this page",
	"deploy %d rolled out", "payment %d received", "you have %d unread messages",
}

// mockPublisher stands in for the app in demo mode, as the seed design's did: it publishes to the
// demo users at random intervals until ctx ends.
func mockPublisher(ctx context.Context, store cache.Store, log *zap.Logger) {
	t := time.NewTimer(0)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		user := demoUsers[rand.N(len(demoUsers))]
		text := fmt.Sprintf(demoLines[rand.N(len(demoLines))], n)
		data := fmt.Appendf(nil, `{"text":%q,"n":%d,"sentAt":%d}`, text, n, time.Now().UnixMilli())
		if _, err := store.Append(ctx, []cache.Draft{{Stream: user, Event: "notice", Data: data}}); err != nil && ctx.Err() == nil {
			log.Warn("demo publish failed", zap.Error(err))
		}
		t.Reset(300*time.Millisecond + rand.N(1700*time.Millisecond))
	}
}
