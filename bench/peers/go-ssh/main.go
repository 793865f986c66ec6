// The Go peer of the leash benchmarks (bench/run.ts, issue 5): golang.org/x/crypto/ssh, the
// seed's own stack, doing what the leash contenders do. Built offline by the bench from
// Debian's golang-go and golang-golang-x-crypto-dev (GOPATH=/usr/share/gocode,
// GO111MODULE=off, GOPROXY=off); never downloads anything.
//
//	go-ssh fresh  -n N -c CONC -addr HOST:PORT -user U -key FILE -known-hosts FILE
//	    N sessions running `true`, CONC at a time, each on a new connection (dial, handshake
//	    with curve25519-sha256, known_hosts check, public-key auth, session, Run, close).
//	go-ssh pooled -n N -c CONC -addr ... (same flags)
//	    One connection, dialled before the clock starts; N sessions on it, CONC at a time.
//	go-ssh stuck  -n N -warmup W -addr HOST:PORT
//	    N TCP connections, each handed to ssh.NewClientConn (which then waits for the
//	    server's banner forever: no deadline, as in the incident) against a server that never
//	    speaks. Prints one JSON line with RSS before and with them, then waits for a line or
//	    EOF on stdin and exits.
//
// fresh and pooled print one JSON line: per-session latencies (ms), wall time (ms, from the
// first session's start to the last one's end), this process's CPU (ms) and max RSS (KiB)
// by getrusage, and the number of failures; the exit status is 1 when any session failed.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

type result struct {
	LatenciesMs []float64 `json:"latenciesMs"`
	WallMs      float64   `json:"wallMs"`
	CPUMs       float64   `json:"cpuMs"`
	MaxRssKiB   int64     `json:"maxRssKiB"`
	Failures    int       `json:"failures"`
	FirstError  string    `json:"firstError,omitempty"`
}

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "go-ssh: "+format+"\n", args...)
	os.Exit(2)
}

func clientConfig(user, keyFile, knownHostsFile string) *ssh.ClientConfig {
	pem, err := os.ReadFile(keyFile)
	if err != nil {
		die("%v", err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		die("key %s: %v", keyFile, err)
	}
	check, err := knownhosts.New(knownHostsFile)
	if err != nil {
		die("known_hosts %s: %v", knownHostsFile, err)
	}
	return &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   check,
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		Config:            ssh.Config{KeyExchanges: []string{"curve25519-sha256"}},
		Timeout:           10 * time.Second,
	}
}

func runSession(client *ssh.Client) error {
	session, err := client.NewSession()
	if err != nil {
		return err
	}
	defer session.Close()
	return session.Run("true")
}

func fresh(addr string, config *ssh.ClientConfig) error {
	conn, err := net.DialTimeout("tcp", addr, config.Timeout)
	if err != nil {
		return err
	}
	// A deadline over the handshake: the lesson of the incident.
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, config)
	if err != nil {
		conn.Close()
		return err
	}
	_ = conn.SetDeadline(time.Time{})
	client := ssh.NewClient(c, chans, reqs)
	defer client.Close()
	return runSession(client)
}

func cpuAndRss() (float64, int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1, -1
	}
	ms := func(tv syscall.Timeval) float64 { return float64(tv.Sec)*1000 + float64(tv.Usec)/1000 }
	return ms(ru.Utime) + ms(ru.Stime), ru.Maxrss // Linux: KiB
}

// run runs n tasks, conc at a time, and measures them.
func run(n, conc int, task func() error) result {
	latencies := make([]float64, n)
	var next int64 = -1
	var mu sync.Mutex
	res := result{}
	cpu0, _ := cpuAndRss()
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < conc && w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(atomic.AddInt64(&next, 1))
				if i >= n {
					return
				}
				t0 := time.Now()
				err := task()
				latencies[i] = float64(time.Since(t0).Microseconds()) / 1000
				if err != nil {
					mu.Lock()
					res.Failures++
					if res.FirstError == "" {
						res.FirstError = err.Error()
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	res.WallMs = float64(time.Since(start).Microseconds()) / 1000
	cpu1, rss := cpuAndRss()
	res.CPUMs = cpu1 - cpu0
	res.MaxRssKiB = rss
	res.LatenciesMs = latencies
	return res
}

func rssKiB() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			v, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return v
		}
	}
	return -1
}

// flood opens n connections to addr and starts a client handshake on each; returns once
// every handshake goroutine has sent its banner and is waiting for the server's.
func flood(n int, addr string, config *ssh.ClientConfig) ([]net.Conn, *sync.WaitGroup, error) {
	conns := make([]net.Conn, 0, n)
	var started, ended sync.WaitGroup
	for i := 0; i < n; i++ {
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, nil, fmt.Errorf("dial %d: %w", i, err)
		}
		conns = append(conns, conn)
		started.Add(1)
		ended.Add(1)
		go func(c net.Conn) {
			defer ended.Done()
			started.Done()
			// No deadline: blocks reading the banner until the bench closes the socket.
			_, _, _, _ = ssh.NewClientConn(c, addr, config)
		}(conn)
	}
	started.Wait()
	return conns, &ended, nil
}

func stuck(n, warmup int, addr string) {
	config := &ssh.ClientConfig{
		User:            "leash-bench",
		Auth:            []ssh.AuthMethod{ssh.Password("unused")},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), // never reached: the server never speaks
		Config:          ssh.Config{KeyExchanges: []string{"curve25519-sha256"}},
	}
	settle := func() {
		time.Sleep(300 * time.Millisecond) // every goroutine blocked in its read
		runtime.GC()
		debug.FreeOSMemory()
	}
	// Warm-up: the same code paths once (the runtime's heap and stacks grow to their working size).
	if warmup > 0 {
		conns, ended, err := flood(warmup, addr, config)
		if err != nil {
			die("warm-up: %v", err)
		}
		settle()
		for _, c := range conns {
			c.Close()
		}
		ended.Wait()
	}
	settle()
	baseline := rssKiB()
	goroutines0 := runtime.NumGoroutine()
	t0 := time.Now()
	conns, ended, err := flood(n, addr, config)
	if err != nil {
		die("%v", err)
	}
	reachMs := float64(time.Since(t0).Microseconds()) / 1000
	settle()
	loaded := rssKiB()
	out, _ := json.Marshal(map[string]any{
		"count":          n,
		"baselineRssKiB": baseline,
		"loadedRssKiB":   loaded,
		"goroutines":     runtime.NumGoroutine() - goroutines0,
		"reachMs":        reachMs,
	})
	fmt.Println(string(out))
	// Wait for the bench (it reads our RSS from /proc too), then close everything.
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	for _, c := range conns {
		c.Close()
	}
	done := make(chan struct{})
	go func() { ended.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		die("handshake goroutines still running 10 s after their sockets closed")
	}
}

func main() {
	if len(os.Args) < 2 {
		die("usage: go-ssh fresh|pooled|stuck [flags]")
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	n := fs.Int("n", 10, "sessions (fresh, pooled) or connections (stuck)")
	conc := fs.Int("c", 1, "sessions at a time")
	warmup := fs.Int("warmup", 0, "stuck: connections in the warm-up flood")
	addr := fs.String("addr", "", "HOST:PORT")
	user := fs.String("user", "", "remote user")
	key := fs.String("key", "", "private key file")
	knownHosts := fs.String("known-hosts", "", "known_hosts file")
	_ = fs.Parse(os.Args[2:])
	if *addr == "" {
		die("-addr is required")
	}

	var res result
	switch mode {
	case "stuck":
		stuck(*n, *warmup, *addr)
		return
	case "fresh":
		config := clientConfig(*user, *key, *knownHosts)
		res = run(*n, *conc, func() error { return fresh(*addr, config) })
	case "pooled":
		config := clientConfig(*user, *key, *knownHosts)
		client, err := ssh.Dial("tcp", *addr, config)
		if err != nil {
			die("dial: %v", err)
		}
		// One session first, so the measured ones find the connection warm (as leash's pool does).
		if err := runSession(client); err != nil {
			die("warm-up session: %v", err)
		}
		res = run(*n, *conc, func() error { return runSession(client) })
		if err := client.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			die("close: %v", err)
		}
	default:
		die("unknown mode %q", mode)
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	if res.Failures > 0 {
		os.Exit(1)
	}
}
