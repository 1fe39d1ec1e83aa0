package e2e

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestBadInput sends the real binary requests it must refuse. Each asserts the status, the JSON
// error code, and that the store is unchanged (the operator listing and the users' polls).
func TestBadInput(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{
		"BRIDGE_MAX_MESSAGE_BYTES": "1KiB",
		"BRIDGE_MAX_BATCH":         "10",
		"BRIDGE_MAX_BODY_BYTES":    "64KiB",
	})
	d.publishSeq(t, "alice", 3, 3)
	d.publishSeq(t, "bob", 2, 1)
	users := []string{"alice", "bob"}

	now := time.Now()
	hour := now.Add(time.Hour).Unix()
	alice := userToken(t, "alice")
	tokens := []struct{ name, token, code string }{
		{"missing", "", "token_missing"},
		{"expired", mintToken(t, "alice", now.Add(-time.Hour)), "token_expired"},
		{"forged (another secret)", signToken(t, jwt.SigningMethodHS256, []byte("not-the-secret-not-the-secret-123"), jwt.MapClaims{"sub": "alice", "exp": hour}), "token_invalid"},
		{"alg none", signToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "exp": hour}), "token_invalid"},
		{"alg HS512 with the right secret", signToken(t, jwt.SigningMethodHS512, []byte(jwtSecret), jwt.MapClaims{"sub": "alice", "exp": hour}), "token_invalid"},
		{"no exp", signToken(t, jwt.SigningMethodHS256, []byte(jwtSecret), jwt.MapClaims{"sub": "alice"}), "token_invalid"},
		{"no sub", signToken(t, jwt.SigningMethodHS256, []byte(jwtSecret), jwt.MapClaims{"exp": hour}), "token_invalid"},
		{"not yet valid", signToken(t, jwt.SigningMethodHS256, []byte(jwtSecret), jwt.MapClaims{"sub": "alice", "exp": hour, "nbf": hour - 60}), "token_invalid"},
		{"tampered payload", tamper(t, alice, "bob"), "token_invalid"},
		{"not a JWT (the publish key)", publishKey, "token_invalid"},
	}

	type tc struct {
		name   string
		method string
		path   string
		auth   string      // Authorization: Bearer
		header http.Header // more headers
		body   string
		status int
		code   string
		allow  string // the Allow header of a 405
	}
	var tests []tc

	// Publishing.
	pub := func(name, body string, status int, code string) {
		tests = append(tests, tc{name: "publish: " + name, method: "POST", path: "/v1/publish", auth: publishKey, body: body, status: status, code: code})
	}
	pub("malformed JSON", `{"user":"alice","data":`, 400, "bad_json")
	pub("syntax error", `{"user":"alice","data":01}`, 400, "bad_json")
	pub("not an object", `[{"user":"alice","data":1}]`, 400, "bad_json")
	pub("two objects", `{"user":"alice","data":1}{"user":"alice","data":2}`, 400, "bad_json")
	pub("trailing garbage", `{"user":"alice","data":1} x`, 400, "bad_json")
	pub("empty body", ``, 400, "bad_json")
	pub("unknown field", `{"user":"alice","data":1,"colour":"red"}`, 400, "bad_json")
	pub("unknown field in a batch item", `{"messages":[{"user":"alice","data":1},{"user":"alice","data":2,"ttl":5}]}`, 400, "bad_json")
	pub("wrong type", `{"user":42,"data":1}`, 400, "bad_json")
	pub("missing data", `{"user":"alice"}`, 400, "bad_data")
	pub("missing data in a batch item", `{"messages":[{"user":"alice","data":1},{"user":"alice"}]}`, 400, "bad_data")
	pub("missing user", `{"data":1}`, 400, "bad_user")
	pub("empty user", `{"user":"","data":1}`, 400, "bad_user")
	pub("user with a control character", `{"user":"ali\u0000ce","data":1}`, 400, "bad_user")
	pub("user too long", `{"user":"`+strings.Repeat("u", 257)+`","data":1}`, 400, "bad_user")
	pub("event with a space", `{"user":"alice","event":"chat msg","data":1}`, 400, "bad_event")
	pub("event with a line break", `{"user":"alice","event":"x\nid: 1","data":1}`, 400, "bad_event")
	pub("event too long", `{"user":"alice","event":"`+strings.Repeat("e", 65)+`","data":1}`, 400, "bad_event")
	for _, ev := range []string{"reset", "hello", "ping", "close"} {
		pub("reserved event "+ev, `{"user":"alice","event":"`+ev+`","data":1}`, 400, "bad_event")
	}
	pub("reserved event in a batch after good items", `{"messages":[{"user":"alice","data":1},{"user":"bob","data":2},{"user":"alice","event":"reset","data":3}]}`, 400, "bad_event")
	pub("key too long", `{"user":"alice","data":1,"key":"`+strings.Repeat("k", 257)+`"}`, 400, "bad_key")
	pub("both one message and messages", `{"user":"alice","data":1,"messages":[{"user":"alice","data":2}]}`, 400, "bad_request")
	pub("empty messages", `{"messages":[]}`, 400, "bad_request")
	pub("null messages", `{"messages":null}`, 400, "bad_request")
	pub("empty object", `{}`, 400, "bad_request")
	big := `"` + strings.Repeat("x", 1100) + `"`
	pub("oversize message", `{"user":"alice","data":`+big+`}`, 413, "too_large")
	pub("oversize message in a batch", `{"messages":[{"user":"alice","data":1},{"user":"alice","data":`+big+`}]}`, 413, "too_large")
	var eleven []string
	for i := range 11 {
		eleven = append(eleven, fmt.Sprintf(`{"user":"alice","data":%d}`, i))
	}
	pub("oversize batch", `{"messages":[`+strings.Join(eleven, ",")+`]}`, 413, "batch_too_large")
	pub("oversize body", `{"user":"alice","data":"`+strings.Repeat("x", 70<<10)+`"}`, 413, "body_too_large")
	for _, k := range []struct{ name, key, code string }{
		{"missing publish key", "", "key_missing"},
		{"wrong publish key", "wrong-key-0123456789", "key_invalid"},
		{"admin key as publish key", adminKey, "key_invalid"},
		{"subscriber token as publish key", alice, "key_invalid"},
	} {
		tests = append(tests, tc{name: "publish: " + k.name, method: "POST", path: "/v1/publish", auth: k.key, body: `{"user":"alice","data":1}`, status: 401, code: k.code})
	}
	tests = append(tests, tc{name: "publish: key in another scheme", method: "POST", path: "/v1/publish",
		header: http.Header{"Authorization": {"Basic " + publishKey}}, body: `{"user":"alice","data":1}`, status: 401, code: "key_missing"})

	// Reading: every transport refuses every bad token, in the header and in the query.
	for _, tr := range []struct{ name, path string }{
		{"poll", "/v1/poll"}, {"long-poll", "/v1/poll?wait=1s"}, {"SSE", "/v1/sse"},
	} {
		for _, tk := range tokens {
			tests = append(tests, tc{name: tr.name + ": token " + tk.name, method: "GET", path: tr.path, auth: tk.token, status: 401, code: tk.code})
			if tk.token != "" {
				sep := "?"
				if strings.Contains(tr.path, "?") {
					sep = "&"
				}
				tests = append(tests, tc{name: tr.name + ": token query " + tk.name, method: "GET", path: tr.path + sep + "token=" + url.QueryEscape(tk.token), status: 401, code: tk.code})
			}
		}
		tests = append(tests, tc{name: tr.name + ": admin key as token", method: "GET", path: tr.path, auth: adminKey, status: 401, code: "token_invalid"})
	}
	for _, c := range []string{"abc", "0-1", "A-1", "1-01", "01-1", "1-", "-1", "1--1", "1-1-1", "1-18446744073709551616", "1 -1", strings.Repeat("1", 40) + "-1"} {
		q := url.Values{"cursor": {c}}.Encode()
		tests = append(tests,
			tc{name: "poll: malformed cursor " + c, method: "GET", path: "/v1/poll?" + q, auth: alice, status: 400, code: "bad_cursor"},
			tc{name: "long-poll: malformed cursor " + c, method: "GET", path: "/v1/poll?wait=1s&" + q, auth: alice, status: 400, code: "bad_cursor"},
			tc{name: "SSE: malformed cursor query " + c, method: "GET", path: "/v1/sse?" + q, auth: alice, status: 400, code: "bad_cursor"},
			tc{name: "SSE: malformed Last-Event-ID " + c, method: "GET", path: "/v1/sse", auth: alice, header: http.Header{"Last-Event-Id": {c}}, status: 400, code: "bad_cursor"},
		)
	}
	for _, w := range []string{"soon", "-1s", "1h1", "99999999999"} {
		tests = append(tests, tc{name: "long-poll: bad wait " + w, method: "GET", path: "/v1/poll?wait=" + url.QueryEscape(w), auth: alice, status: 400, code: "bad_wait"})
	}

	// Methods and paths.
	for _, m := range []struct{ method, path, allow string }{
		{"GET", "/v1/publish", "POST"},
		{"PUT", "/v1/publish", "POST"},
		{"POST", "/v1/poll", "GET"},
		{"DELETE", "/v1/poll", "GET"},
		{"POST", "/v1/sse", "GET"},
		{"POST", "/v1/admin/messages", "GET"},
		{"DELETE", "/v1/admin/messages", "GET"},
		{"POST", "/readyz", "GET"},
		{"POST", "/healthz", "GET"},
	} {
		tests = append(tests, tc{name: "wrong method: " + m.method + " " + m.path, method: m.method, path: m.path, auth: publishKey,
			body: `{"user":"alice","data":"must not be stored"}`, status: 405, code: "method_not_allowed", allow: m.allow})
	}
	for _, p := range []string{"/v1/nope", "/v1/publish/extra", "/v1/pollx", "/", "/demo/token?user=alice", "/v2/publish"} {
		tests = append(tests, tc{name: "unknown path: " + p, method: "GET", path: p, auth: publishKey, status: 404, code: "not_found"})
	}
	tests = append(tests,
		tc{name: "unknown path: POST /v1/publish/", method: "POST", path: "/v1/publish/", auth: publishKey, body: `{"user":"alice","data":1}`, status: 404, code: "not_found"},
		tc{name: "admin: wrong key", method: "GET", path: "/v1/admin/messages", auth: publishKey, status: 401, code: "key_invalid"},
		tc{name: "admin: bad limit", method: "GET", path: "/v1/admin/messages?limit=0", auth: adminKey, status: 400, code: "bad_limit"},
	)

	before := d.snapshot(t, users...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := d.do(t, tt.method, tt.path, tt.auth, tt.body, tt.header)
			if r.status != tt.status {
				t.Errorf("status %d, want %d (%s)", r.status, tt.status, r)
			}
			if code := apiErrorCode(t, r); code != tt.code {
				t.Errorf("error code %q, want %q (%s)", code, tt.code, r)
			}
			if tt.status == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
			if tt.allow != "" && r.header.Get("Allow") != tt.allow {
				t.Errorf("Allow %q, want %q", r.header.Get("Allow"), tt.allow)
			}
			if after := d.snapshot(t, users...); after != before {
				t.Fatalf("the store changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// tamper returns tok with its payload's sub replaced, keeping the original signature.
func tamper(tb testing.TB, tok, sub string) string {
	tb.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		tb.Fatalf("token %q has %d parts", tok, len(parts))
	}
	payload := mustJSON(tb, map[string]any{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()})
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(payload))
	return strings.Join(parts, ".")
}
