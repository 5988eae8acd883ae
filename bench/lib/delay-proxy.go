// A TCP forwarder that adds latency, for benchmark machines whose kernel has no netem
// (`--latency` falls back to it): `delay-proxy <listen-port> <target-host> <target-port>
// <one-way-ms>`. bench/lib/server.ts builds it with `go build` (standard library only) into
// .build/bin/delay-proxy. It listens on 127.0.0.1 only, prints its port, and forwards every
// connection to the target; each chunk, either way, leaves one-way-ms after it arrived (order
// kept), and a new connection reaches the target after one round trip (the SYN and SYN-ACK a
// real link would delay). SIGUSR1 switches the delay off, SIGUSR2 on again.
//
// What it models and what it does not: the per-request round trip (requests and answers wait
// one RTT) and the delay of every byte; it keeps at most 8 MiB in flight per direction of a
// connection (the reading side waits above it), so one connection carries at most 8 MiB per
// one-way delay, like a TCP window that autotuned to that size. It does not model loss or TCP's
// slow start on the long link: figures over it approximate a real long link, and the bench
// says so. It is in Go, not TypeScript, because on a 2-core machine the link must cost as little
// CPU as it can: the first version, on Bun's node:net, took about 1.5 s of CPU per GiB
// forwarded, which the systems under test then lacked (a real link costs them nothing).
//
// Is: a measurement aid on loopback. Is not: used by bucketfs or the tests.
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const highWater = 8 << 20
const chunkSize = 256 << 10

var delayOn atomic.Bool

var bufs = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// window counts the bytes of one direction that are read but not yet written.
type window struct {
	mu      sync.Mutex
	cond    *sync.Cond
	pending int
	closed  bool
}

func newWindow() *window {
	w := &window{}
	w.cond = sync.NewCond(&w.mu)
	return w
}

func (w *window) take(n int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.pending+n > highWater && w.pending > 0 && !w.closed {
		w.cond.Wait()
	}
	w.pending += n
	return !w.closed
}

func (w *window) give(n int) {
	w.mu.Lock()
	w.pending -= n
	w.mu.Unlock()
	w.cond.Broadcast()
}

func (w *window) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cond.Broadcast()
}

type chunk struct {
	buf *[]byte
	n   int
	due time.Time
	eof bool
}

// pipe forwards from -> to, each chunk oneWay late; at EOF it half-closes `to` (as late).
func pipe(from, to *net.TCPConn, oneWay time.Duration, done *sync.WaitGroup) {
	defer done.Done()
	w := newWindow()
	q := make(chan chunk, highWater/1024)
	go func() {
		for c := range q {
			if d := time.Until(c.due); d > 0 {
				time.Sleep(d)
			}
			if c.eof {
				_ = to.CloseWrite()
				continue
			}
			_, err := to.Write((*c.buf)[:c.n])
			bufs.Put(c.buf)
			w.give(c.n)
			if err != nil {
				w.close()
				_ = from.Close()
			}
		}
	}()
	delay := func() time.Duration {
		if delayOn.Load() {
			return oneWay
		}
		return 0
	}
	for {
		b := bufs.Get().(*[]byte)
		n, err := from.Read(*b)
		if n > 0 {
			if !w.take(n) {
				bufs.Put(b)
				break
			}
			q <- chunk{buf: b, n: n, due: time.Now().Add(delay())}
		} else {
			bufs.Put(b)
		}
		if err != nil {
			q <- chunk{eof: true, due: time.Now().Add(delay())}
			break
		}
	}
	close(q)
}

func serve(client *net.TCPConn, target string, oneWay time.Duration) {
	if delayOn.Load() {
		time.Sleep(2 * oneWay)
	}
	c, err := net.Dial("tcp", target)
	if err != nil {
		_ = client.Close()
		return
	}
	up := c.(*net.TCPConn)
	_ = up.SetNoDelay(true)
	_ = client.SetNoDelay(true)
	var done sync.WaitGroup
	done.Add(2)
	go pipe(client, up, oneWay, &done)
	go pipe(up, client, oneWay, &done)
	done.Wait()
	// Both directions ended: let the last delayed bytes go, then close.
	time.Sleep(oneWay + 5*time.Millisecond)
	_ = client.Close()
	_ = up.Close()
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: delay-proxy <listen-port|0> <target-host> <target-port> <one-way-ms>")
		os.Exit(2)
	}
	ms, err := strconv.ParseFloat(os.Args[4], 64)
	if err != nil || ms < 0 {
		fmt.Fprintln(os.Stderr, "delay-proxy: bad one-way-ms", os.Args[4])
		os.Exit(2)
	}
	oneWay := time.Duration(ms * float64(time.Millisecond))
	delayOn.Store(true)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		for s := range sigs {
			delayOn.Store(s == syscall.SIGUSR2)
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "delay-proxy:", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	target := net.JoinHostPort(os.Args[2], os.Args[3])
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go serve(c.(*net.TCPConn), target, oneWay)
	}
}
