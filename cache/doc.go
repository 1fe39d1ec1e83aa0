// Package cache defines bridged's storage model: per-stream, expiring, append-only message logs
// that readers consume by cursor, and the Store interface every engine implements.
//
// # Streams and messages
//
// A stream is named by any non-empty string; bridged uses the subscriber's user id. A message is
// {ID, Event, Data, Time}. Nothing here knows about WebSocket, users or HTTP.
//
// # Cursors, epochs and resets
//
// Every message gets a Cursor "<epoch>-<seq>". Seq grows by one per message of a stream, starting
// at 1. Epoch is a random number chosen when a stream is created; it changes whenever the stream's
// history is lost (the stream was freed after going idle, an engine lost its data). A cursor from
// another epoch is therefore recognised as foreign instead of being compared by seq with messages
// it has never seen (the same reason centrifuge's StreamPosition carries an Epoch).
//
// Reading after cursor C returns every retained message after C in order. When any message after
// C is gone, because it expired, was evicted by a per-stream cap, or C belongs to another epoch
// (or lies beyond the stream's end), the Batch says Reset and starts at the oldest retained
// message. A reader is never moved past a message silently. The zero Cursor means "from the oldest
// retained message" and never resets, so it is only for a reader's first read: every read answers
// a real position to continue from (a missing stream is created, empty, to give it one), and a
// reader that keeps resuming from the positions it is given is told of every loss.
//
// Reads never delete: a message stays until it expires or is evicted, so a response that never
// reached its client costs nothing; the client asks again with the same cursor.
//
// # Waiting
//
// Readers that wait for new messages (SSE streams, long-polls) take a Subscription and follow one
// order, which loses no wake-up:
//
//	sub, _ := store.Subscribe(ctx, stream)
//	defer sub.Close()
//	for {
//		changed := sub.Changed()                    // 1. take the channel first
//		b, _ := store.ReadAfter(ctx, stream, c, n)  // 2. then read
//		...deliver b, c = b.Cursor...
//		<-changed                                   // 3. wait (with timers, shutdown, ctx)
//	}
//
// An Append that lands after step 1 closes that channel; one that landed before it is seen by
// step 2. Spurious wake-ups are allowed, so the reader simply reads again.
//
// A reader that parks without a goroutine of its own (bridge's hijacked connections, which wait
// in the network poller) calls Subscription.Notify once instead: the function sets a flag and
// pokes the reader, which clears the flag before each ReadAfter, so again no wake-up is lost.
// Engines build both on Signal and SignalSub.
//
// # Limits
//
// Messages expire after Options.TTL. A stream keeps at most Options.StreamMaxMessages messages
// and Options.StreamMaxBytes bytes; older messages are evicted to make room, and readers behind
// them get a reset. The whole store holds at most Options.MaxMemory bytes: an Append that would
// pass it, even after expired data is reclaimed, fails with ErrFull and stores nothing.
package cache
