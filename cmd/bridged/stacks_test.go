package main

import (
	"slices"
	"testing"
)

func TestKeepStacksEnv(t *testing.T) {
	for _, c := range []struct {
		name    string
		environ []string
		want    string // GODEBUG in the environment to re-execute with; "-" for none
	}{
		{"no GODEBUG", []string{"PATH=/bin"}, "gcshrinkstackoff=1"},
		{"empty GODEBUG", []string{"GODEBUG=", "PATH=/bin"}, "gcshrinkstackoff=1"},
		{"other settings kept", []string{"GODEBUG=gctrace=1,madvdontneed=0"}, "gctrace=1,madvdontneed=0,gcshrinkstackoff=1"},
		{"the operator's choice stands", []string{"GODEBUG=gcshrinkstackoff=0"}, "-"},
		{"after the re-execution", []string{"GODEBUG=gctrace=1,gcshrinkstackoff=1"}, "-"},
		{"a name that only ends alike", []string{"GODEBUG=xgcshrinkstackoff=0"}, "xgcshrinkstackoff=0,gcshrinkstackoff=1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := keepStacksEnv(c.environ)
			if c.want == "-" {
				if env != nil {
					t.Fatalf("re-execute with %q; want no re-execution", env)
				}
				return
			}
			if got := runtimeEnv(env, "GODEBUG"); got != c.want {
				t.Fatalf("GODEBUG=%q, want %q", got, c.want)
			}
			for _, kv := range c.environ {
				if !slices.Contains(env, kv) && kv[:8] != "GODEBUG=" {
					t.Fatalf("%q lost from %q", kv, env)
				}
			}
			if n := len(slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return kv[:min(8, len(kv))] != "GODEBUG=" })); n != 1 {
				t.Fatalf("%d GODEBUG entries in %q", n, env)
			}
		})
	}
}

func TestStackShrinkOff(t *testing.T) {
	for godebug, want := range map[string][2]bool{
		"":                                      {false, false},
		"gctrace=1":                             {false, false},
		"gcshrinkstackoff=1":                    {true, true},
		"gcshrinkstackoff=0":                    {false, true},
		"gcshrinkstackoff=1,gcshrinkstackoff=0": {false, true}, // the last one wins, as in the runtime
		"gcshrinkstackoff=0,gctrace=1,gcshrinkstackoff=2": {true, true},
	} {
		off, named := stackShrinkOff(godebug)
		if [2]bool{off, named} != want {
			t.Errorf("stackShrinkOff(%q) = %v, %v; want %v", godebug, off, named, want)
		}
	}
}
