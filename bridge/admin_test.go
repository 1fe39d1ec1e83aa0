package bridge

import (
	"net/http"
	"testing"
)

type adminAnswer struct {
	Messages []struct {
		User, ID, Event, Time string
	}
	Count     int
	Truncated bool
}

func TestAdminListsRetainedMessages(t *testing.T) {
	h := newHarness(t, nil)
	ids := h.publish(`{"messages":[{"user":"a","data":1},{"user":"b","data":2},{"user":"a","data":3}]}`)
	var all adminAnswer
	rec := h.do("GET", "/v1/admin/messages", testAdminKey, "")
	if rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	decode(t, rec.Body.Bytes(), &all)
	if all.Count != 3 || len(all.Messages) != 3 || all.Truncated {
		t.Fatalf("listing %+v", all)
	}
	seen := map[string]string{}
	for _, m := range all.Messages {
		seen[m.ID] = m.User
	}
	if seen[ids[0]] != "a" || seen[ids[1]] != "b" || seen[ids[2]] != "a" {
		t.Fatalf("listing does not match the publishes: %v", seen)
	}
	// Listing is not reading-and-deleting (the seed design's bug): subscribers still get everything.
	if n := len(h.poll("a", "").Messages); n != 2 {
		t.Fatalf("after the listing a still has %d messages", n)
	}

	var one adminAnswer
	decode(t, h.do("GET", "/v1/admin/messages?user=a&limit=1", testAdminKey, "").Body.Bytes(), &one)
	if one.Count != 1 || !one.Truncated || one.Messages[0].User != "a" || one.Messages[0].ID != ids[0] {
		t.Fatalf("user=a&limit=1: %+v", one)
	}
	for _, q := range []string{"?limit=0", "?limit=x", "?user=a%0Ab"} {
		if rec := h.do("GET", "/v1/admin/messages"+q, testAdminKey, ""); rec.Code != http.StatusBadRequest {
			t.Errorf("%s: %d", q, rec.Code)
		}
	}
}
