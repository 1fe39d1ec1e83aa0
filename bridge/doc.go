// Package bridge serves bridged's HTTP API over a cache.Store: publishing for the app's server,
// and three ways for a user's client to read its stream, SSE, long-poll and poll, so a client
// whose WebSocket broke can step down one rung at a time and resume from its last message id on
// every rung.
//
// # The one read path
//
// All three read transports share one order of operations (see package cache):
//
//	sub := store.Subscribe(user)          // long-poll and SSE only
//	changed := sub.Changed()              // 1. take the wake-up channel
//	batch := store.ReadAfter(user, c, n)  // 2. read after the client's cursor
//	deliver batch; c = batch.Cursor       //    an SSE "event: reset" first when batch.Reset
//	select { changed, heartbeat, deadline, drain, client gone }  // 3. wait
//
// On a parked connection with an in-memory store, the publish that appended a message may do
// step 2 and the delivery for a waiting long-poll or SSE stream, whose own goroutine then stays
// in step 3 (answer.go, stream.go); the order is the same.
//
// Nothing is deleted by a read: a response lost on the way costs nothing, because the client
// asks again with the same cursor. A client is told (reset) whenever anything after its cursor
// is gone, never skipped silently.
//
// # Trust
//
// The user a request reads is the verified token's subject and nothing else: no parameter
// selects a stream. Publishing and the operator listing need their own keys, compared in
// constant time. Tokens and keys are never logged; access lines carry the path, not the query.
//
// # Errors
//
// Handlers return errors; one adapter writes them as {"error":{"code","message"}} with the
// status from one table (toAPIError). A request that fails validation changes nothing.
package bridge
