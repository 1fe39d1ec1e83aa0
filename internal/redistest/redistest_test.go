package redistest

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// do sends one inline command and returns the first line of the answer.
func do(tb testing.TB, addr, cmd string) (string, error) {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\r\n", cmd); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func TestKillAndRestart(t *testing.T) {
	for _, aof := range []bool{false, true} {
		t.Run(fmt.Sprint("aof=", aof), func(t *testing.T) {
			var opts []Option
			if aof {
				opts = append(opts, WithAOF())
			}
			s := Start(t, opts...)
			if got, err := do(t, s.Addr, "SET k v"); err != nil || got != "+OK" {
				t.Fatalf("SET: %q %v", got, err)
			}
			s.Kill(t)
			if _, err := do(t, s.Addr, "PING"); err == nil {
				t.Fatal("the server answers after Kill")
			}
			s.Restart(t)
			got, err := do(t, s.Addr, "EXISTS k")
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]string{true: ":1", false: ":0"}[aof]; got != want {
				t.Fatalf("after a restart with aof=%v: EXISTS k = %s, want %s", aof, got, want)
			}
		})
	}
}

func TestUniquePrefix(t *testing.T) {
	a, b := UniquePrefix(t), UniquePrefix(t)
	if a == b || strings.ContainsAny(a, "{}*?[] ") {
		t.Fatalf("prefixes %q and %q: want distinct, without glob or hash-tag characters", a, b)
	}
}
