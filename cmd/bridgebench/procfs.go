package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100 on every Linux
// architecture Go supports (the kernel fixes it for the ABI).
const clockTicks = 100

// procTree returns pid and every descendant, found by scanning /proc for parent ids (this
// kernel has no /proc/<pid>/task/<tid>/children).
func procTree(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []int{pid}
	}
	parent := map[int]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f, err := readStat(p); err == nil {
			parent[p] = f.ppid
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		for p, pp := range parent {
			if pp == out[i] {
				out = append(out, p)
			}
		}
	}
	return out
}

type statFields struct {
	ppid         int
	utime, stime uint64 // clock ticks
}

// readStat reads the fields of /proc/<pid>/stat the tool uses. The command name, field 2, is in
// parentheses and may hold spaces, so fields are counted from the last ')'.
func readStat(pid int) (statFields, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return statFields{}, err
	}
	return parseStat(b)
}

func parseStat(b []byte) (statFields, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return statFields{}, fmt.Errorf("malformed stat %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return statFields{}, fmt.Errorf("malformed stat %q", b)
	}
	var s statFields
	var err1, err2, err3 error
	s.ppid, err1 = strconv.Atoi(f[1])
	s.utime, err2 = strconv.ParseUint(f[11], 10, 64)
	s.stime, err3 = strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return statFields{}, fmt.Errorf("malformed stat %q", b)
	}
	return s, nil
}

// cpuSeconds returns user+system CPU time consumed so far by pids, summed.
func cpuSeconds(pids []int) float64 {
	var ticks uint64
	for _, p := range pids {
		if s, err := readStat(p); err == nil {
			ticks += s.utime + s.stime
		}
	}
	return float64(ticks) / clockTicks
}

// memory is a process tree's resident memory in bytes: RSS (VmRSS, what top shows, summed; pages
// shared by nginx's workers count once per worker) and PSS (each shared page divided among the
// processes that map it, so the sum counts it once).
type memory struct {
	RSS int64 `json:"rss"`
	PSS int64 `json:"pss"`
}

func memoryOf(pids []int) memory {
	var m memory
	for _, p := range pids {
		m.RSS += procKB(fmt.Sprintf("/proc/%d/status", p), "VmRSS:") * 1024
		m.PSS += procKB(fmt.Sprintf("/proc/%d/smaps_rollup", p), "Pss:") * 1024
	}
	return m
}

// procKB returns the "<key> <n> kB" value of a /proc file, or 0.
func procKB(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, key); ok {
			fs := strings.Fields(rest)
			if len(fs) > 0 {
				n, _ := strconv.ParseInt(fs[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// listeningAddrs returns the IPv4 TCP addresses pid listens on, found through its socket inodes
// in /proc/<pid>/fd and /proc/net/tcp. It lets bridged bind 127.0.0.1:0 without logging at info.
func listeningAddrs(pid int) ([]string, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return nil, err
	}
	return parseListening(b, inodes), nil
}

// parseListening picks the LISTEN (0A) entries of a /proc/net/tcp table whose inode is in inodes.
func parseListening(table []byte, inodes map[string]bool) []string {
	var out []string
	for _, line := range strings.Split(string(table), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
			continue
		}
		hostHex, portHex, ok := strings.Cut(f[1], ":")
		if !ok || len(hostHex) != 8 {
			continue
		}
		h, err1 := strconv.ParseUint(hostHex, 16, 32)
		p, err2 := strconv.ParseUint(portHex, 16, 16)
		if err1 != nil || err2 != nil {
			continue
		}
		// The address is in the kernel's byte order: little-endian on every machine here.
		out = append(out, fmt.Sprintf("%d.%d.%d.%d:%d", h&0xff, h>>8&0xff, h>>16&0xff, h>>24, p))
	}
	return out
}
