package bridge

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// TestParsePublishTakesTheUsualShapes: the bodies apps send are decoded without encoding/json.
func TestParsePublishTakesTheUsualShapes(t *testing.T) {
	for _, body := range []string{
		`{"user":"u","data":1}`,
		`{"user":"alice","event":"chat.msg","data":{"text":"hi \"there\"\\n","n":[1,-2.5e+3,true,false,null]},"key":"k-1"}`,
		" {\r\n\t\"data\" : [ ] , \"user\" : \"ü\" } \n",
		`{"messages":[{"user":"a","data":"x"},{"user":"b","data":null,"key":"k"}]}`,
		`{"messages":[]}`,
		`{"user":"u","data":"\u2028\ud83d\ude00"}`,
		`{}`,
		`{"user":"","data":1}`,
		`{"user":"u","data":1,"messages":[{"user":"u","data":2}]}`, // refused later, by both paths
	} {
		var b publishBody
		if !b.parsePublish([]byte(body)) {
			t.Errorf("left to encoding/json: %s", body)
		}
	}
}

// TestParsePublishLeavesTheRestToEncodingJSON: bodies whose decoding differs in some detail
// from the plain case, or that are refused, are decided by encoding/json.
func TestParsePublishLeavesTheRestToEncodingJSON(t *testing.T) {
	for _, body := range []string{
		``, ` `, `[]`, `{`, `{"user":"u","data":1} x`, `{"user":"u","data":1}{}`,
		`{"user":"u\n","data":1}`,        // an escape in a member encoding/json decodes
		"{\"user\":\"\xff\",\"data\":1}", // bad UTF-8: encoding/json turns it into U+FFFD
		`{"User":"u","data":1}`,          // names match without regard to case in encoding/json
		`{"user":"u","user":"v","data":1}`,
		`{"user":null,"data":1}`, `{"messages":null}`,
		`{"user":"u","data":1,"receiver":"x"}`,
		`{"user":"u","data":01}`, `{"user":"u","data":1.}`, `{"user":"u","data":"\x"}`, `{"user":"u","data":tru}`,
		`{"user":"u","data":` + strings.Repeat("[", maxFastDepth+1) + strings.Repeat("]", maxFastDepth+1) + `}`,
		"\xef\xbb\xbf{\"user\":\"u\",\"data\":1}",
	} {
		var b publishBody
		if b.parsePublish([]byte(body)) {
			t.Errorf("decoded without encoding/json: %q", body)
		}
	}
}

// TestReadBodyKeepsTheReadError: what encoding/json is given after a failed read is the bytes
// read, then the error, as the body's reader gave them.
func TestReadBodyKeepsTheReadError(t *testing.T) {
	body := strings.Repeat(`{"user":"u","data":1}`, 1000)
	got, err := readBody(iotest.OneByteReader(strings.NewReader(body)), nil, -1)
	if err != nil || string(got) != body {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	rec := newRecorder()
	got, err = readBody(http.MaxBytesReader(rec, io.NopCloser(strings.NewReader(body)), 100), make([]byte, 0, 8), int64(len(body)))
	if _, ok := errors.AsType[*http.MaxBytesError](err); !ok || string(got) != body[:100] {
		t.Fatalf("over the limit: %q, %v", got, err)
	}
}

// FuzzPublishDecode: whenever parsePublish decodes a body, encoding/json (as publish uses it)
// accepts the body too and decodes exactly the same publishBody.
func FuzzPublishDecode(f *testing.F) {
	for _, s := range []string{
		`{"user":"u","data":1}`,
		`{"user":"u","event":"chat.msg","data":{"a":[1,2,"x"]},"key":"k1"}`,
		`{"messages":[{"user":"a","data":"x"},{"user":"b","data":null,"key":"k"}]}`,
		`{"user":"u","data":"line\nbreak"}`, "{\"user\":\"u\",\"data\":{\n\"a\" : 1\r\n}}",
		`{"user":"","data":1}`, `{"user":"u"}`, `{"messages":[]}`, `[]`, `{`, ``, `{"user":"u","data":1}x`,
		`{"user":"u","event":"reset","data":1}`, "{\"user\":\"\xff\",\"data\":1}",
		`{"user":"u","data":[-0.5e-7,1E+2,"\u00e9\"\\\/\b\f\n\r\t",{"":{}},[[]],true,false,null]}`,
		`{"user":"u","data":1,"messages":[{"user":"v","data":2}],"key":"","event":""}`,
		`{"USER":"u","data":1}`, `{"user":"u","user":"v","data":1}`, `{"messages":null}`,
		`{"messages":[{"user":"a","event":"e","data":1},{"user":"b","event":"e","data":2},{"user":"c","event":"f","key":"e","data":3}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fast publishBody
		if !fast.parsePublish(body) {
			return
		}
		want, err := decodeJSON(bytes.NewReader(body), 1<<30)
		if err != nil {
			t.Fatalf("parsePublish accepted what encoding/json refuses (%v): %q", err, body)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("parsePublish decoded %q\nas %+v\nencoding/json as %+v", body, fast, want)
		}
	})
}
