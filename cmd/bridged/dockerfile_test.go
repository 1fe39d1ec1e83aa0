package main

import (
	"debug/elf"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd, args string
	line      int
}

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
		if strings.HasSuffix(trimmed, "\\") {
			continue
		}
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start})
		cur.Reset()
	}
	return out
}

// TestDockerfile lints the Dockerfile (there is no Docker engine, nor a hadolint package, on the
// CI machines) and builds the binary with the exact command its build stage runs.
func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t, "../../Dockerfile")
	var froms []instruction
	finalStage := 0
	for i, in := range ins {
		if in.cmd == "FROM" {
			froms = append(froms, in)
			finalStage = i
		}
	}
	if len(froms) < 2 {
		t.Fatal("want a multi-stage build: a Go stage and a minimal runtime stage")
	}
	for _, f := range froms {
		image := strings.Fields(f.args)[0]
		if !strings.Contains(image, ":") || strings.HasSuffix(image, ":latest") {
			t.Errorf("line %d: FROM %s: pin a tag, not latest", f.line, image)
		}
	}
	if base := strings.Fields(froms[len(froms)-1].args)[0]; !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
		t.Errorf("runtime base %s: want distroless static or scratch", base)
	}
	final := ins[finalStage:]
	find := func(cmd string) *instruction {
		for i := range final {
			if final[i].cmd == cmd {
				return &final[i]
			}
		}
		return nil
	}
	if u := find("USER"); u == nil || u.args == "root" || strings.HasPrefix(u.args, "0") {
		t.Error("the runtime stage must set a non-root USER")
	}
	hc := find("HEALTHCHECK")
	if hc == nil || !strings.Contains(hc.args, `"healthcheck"`) {
		t.Error("want a HEALTHCHECK running `bridged healthcheck` (distroless has no shell or curl)")
	}
	if ep := find("ENTRYPOINT"); ep == nil || !strings.HasPrefix(ep.args, "[") {
		t.Error("want ENTRYPOINT in exec form, so SIGTERM reaches bridged for a graceful drain")
	}
	if e := find("EXPOSE"); e == nil || e.args != "8080" {
		t.Error("want EXPOSE 8080, the default BRIDGE_ADDR")
	}
	var build *instruction
	copiedAll := false
	for i := range ins[:finalStage] {
		in := &ins[i]
		if in.cmd == "COPY" && strings.HasPrefix(in.args, ". ") {
			copiedAll = true
		}
		if in.cmd == "RUN" && strings.Contains(in.args, "go mod download") && copiedAll {
			t.Error("download modules before COPY . so the layer is cached")
		}
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			build = in
		}
	}
	if build == nil {
		t.Fatal("no go build in the build stage")
	}
	if !strings.Contains(build.args, "CGO_ENABLED=0") {
		t.Fatal("the build must set CGO_ENABLED=0 for a static binary")
	}

	// Run the build line as written, with only the output path changed.
	words := shellWords(t, build.args)
	var env []string
	for len(words) > 0 && strings.Contains(words[0], "=") {
		env = append(env, words[0])
		words = words[1:]
	}
	bin := filepath.Join(t.TempDir(), "bridged")
	if i := slices.Index(words, "-o"); i < 0 || i+1 >= len(words) {
		t.Fatal("the go build line has no -o")
	} else {
		words[i+1] = bin
	}
	cmd := exec.Command(words[0], words[1:]...)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build.args, err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary has an ELF interpreter: it is not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("the binary links %v", libs)
	}

	// The image's HEALTHCHECK command, against the binary it would run: the demo on a free port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	check := func() error {
		c := exec.Command(bin, "healthcheck")
		c.Env = []string{"BRIDGE_ADDR=" + addr}
		return c.Run()
	}
	if check() == nil {
		t.Fatal("healthcheck passed with nothing listening")
	}
	d := exec.Command(bin)
	d.Env = []string{"BRIDGE_DEMO=true", "BRIDGE_ADDR=" + addr}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.Wait() }()
	defer func() {
		d.Process.Signal(syscall.SIGTERM)
		if err := <-exited; err != nil {
			t.Errorf("bridged did not exit cleanly: %v", err)
		}
	}()
	deadline := time.Now().Add(15 * time.Second)
	for check() != nil {
		if time.Now().After(deadline) {
			t.Fatal("healthcheck never passed against the running binary")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// shellWords splits a RUN line the way sh would for the simple forms a Dockerfile uses: words
// separated by spaces, double-quoted parts kept together.
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inQuote, inWord := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, inWord = !inQuote, true
		case r == ' ' && !inQuote:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case strings.ContainsRune("&|;$`'\\", r):
			t.Fatalf("the go build line uses shell syntax this test does not run: %q", s)
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

func TestHealthcheckAddress(t *testing.T) {
	if err := healthcheck("nonsense"); err == nil {
		t.Fatal("a malformed BRIDGE_ADDR passed")
	}
}
