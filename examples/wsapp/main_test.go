package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/bridged/bridged/internal/bridgedtest"
	"github.com/bridged/bridged/publisher"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsapp-test-")
	if err != nil {
		panic(err)
	}
	if _, err := bridgedtest.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "build bridged:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestFramesCarryBridgedIDs: what the app sends on its socket is what bridged stored, with the
// same ids, so a browser can switch between them on one cursor.
func TestFramesCarryBridgedIDs(t *testing.T) {
	d := bridgedtest.Start(t, nil)
	pub, err := publisher.New(publisher.Options{URL: d.URL, Key: bridgedtest.PublishKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close(t.Context()) })
	a := newApp(pub, []byte(bridgedtest.JWTSecret), time.Hour)
	ts := httptest.NewServer(a)
	t.Cleanup(ts.Close)
	t.Cleanup(a.shutdown)

	tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(bridgedtest.JWTSecret))
	conn, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(ts.URL, "http")+"/ws?token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	read := func() map[string]any {
		_, b, err := conn.Read(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var f map[string]any
		json.Unmarshal(b, &f)
		return f
	}
	if f := read(); f["type"] != "hello" {
		t.Fatalf("first frame %v", f)
	}
	var sent []string
	for i := range 3 {
		resp, err := http.Post(ts.URL+"/send", "application/json", strings.NewReader(fmt.Sprintf(`{"user":"alice","event":"notice","data":{"n":%d}}`, i)))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("send: %v %v", resp, err)
		}
		var out struct{ ID string }
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		sent = append(sent, out.ID)
		if f := read(); f["type"] != "message" || f["id"] != out.ID || f["event"] != "notice" {
			t.Fatalf("frame %v, want message %s", f, out.ID)
		}
	}
	stored := d.Messages(t, "alice")
	for i, line := range stored {
		if !strings.HasPrefix(line, sent[i]+" notice ") {
			t.Fatalf("bridged has %q, the socket carried %v", stored, sent)
		}
	}
	if len(stored) != 3 {
		t.Fatalf("bridged has %d messages, want 3", len(stored))
	}
	if _, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(ts.URL, "http")+"/ws?token=forged", nil); err == nil {
		t.Fatal("a forged token got a socket")
	}
}
