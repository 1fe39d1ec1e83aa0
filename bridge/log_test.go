package bridge

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestNoSecretIsLogged sends every kind of request with tokens and keys in headers and query
// strings, good and bad, and checks no log entry carries any of them.
func TestNoSecretIsLogged(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	h := newHarness(t, func(o *Options) { o.Log = zap.New(core); o.LongPollMax = time.Millisecond })
	tok := token(t, "u", time.Hour)
	expired := token(t, "u", -time.Hour)
	secrets := []string{tok, expired, testPublishKey, testAdminKey, testSecret, "wrong-key-wrong-key"}

	h.do("POST", "/v1/publish", testPublishKey, `{"user":"u","data":1}`)
	h.do("POST", "/v1/publish", "wrong-key-wrong-key", `{"user":"u","data":1}`)
	h.do("GET", "/v1/poll?token="+tok+"&wait=1ms", "", "")
	h.do("GET", "/v1/poll?token="+expired, "", "")
	h.do("GET", "/v1/poll?cursor=bad&token="+tok, "", "")
	h.do("GET", "/v1/admin/messages", testAdminKey, "")
	h.do("GET", "/v1/admin/messages?key="+testAdminKey, "", "")
	h.do("GET", fmt.Sprintf("/nope?token=%s", tok), "", "")

	if logs.Len() == 0 {
		t.Fatal("no log entries at all: the test would prove nothing")
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += fmt.Sprintf(" %s=%v", k, v)
		}
		for _, s := range secrets {
			if strings.Contains(line, s) {
				t.Fatalf("log entry carries a secret: %s", line)
			}
		}
		if strings.Contains(line, "token=") {
			t.Fatalf("log entry carries a query string: %s", line)
		}
	}
}
