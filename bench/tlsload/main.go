// Command tlsload measures a TLS server from the outside: full handshakes per second (every
// ClientHello asks for a staple, and a handshake without one counts as missing), resumed
// handshakes per second (each connection offers the ticket of its last full handshake; a full
// handshake that sends the certificate without a staple counts as missing), or keep-alive
// HTTP/1.1 GETs per second with latency percentiles. It prints one JSON object.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	Mode           string  `json:"mode"`
	Seconds        float64 `json:"seconds"`
	Handshakes     int64   `json:"handshakes,omitempty"`
	Resumed        int64   `json:"resumed"`
	MissingStaples int64   `json:"missing_staples"`
	Requests       int64   `json:"requests,omitempty"`
	Errors         int64   `json:"errors"`
	PerSecond      float64 `json:"per_second"`
	P50Millis      float64 `json:"p50_ms,omitempty"`
	P99Millis      float64 `json:"p99_ms,omitempty"`
	FirstError     string  `json:"first_error,omitempty"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "server address")
	name := flag.String("servername", "", "SNI and verified name")
	caFile := flag.String("ca", "", "PEM file of the CA to trust")
	mode := flag.String("mode", "handshake", "handshake, resume or requests")
	version := flag.String("tls", "1.3", "1.2 or 1.3")
	duration := flag.Duration("duration", 5*time.Second, "how long to run")
	concurrency := flag.Int("c", 8, "concurrent connections")
	path := flag.String("path", "/", "request path (requests mode)")
	curves := flag.String("curves", "x25519", "key exchange offered: x25519 (what both servers can do) or default (Go's, incl. X25519MLKEM768)")
	flag.Parse()

	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	v := uint16(tls.VersionTLS13)
	if *version == "1.2" {
		v = tls.VersionTLS12
	}
	cfg := &tls.Config{ServerName: *name, RootCAs: pool, MinVersion: v, MaxVersion: v, NextProtos: []string{"http/1.1"}}
	if *curves == "x25519" {
		cfg.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
	}

	var ok, missing, errs, resumed int64
	var firstErr atomic.Value
	fail := func(err error) {
		atomic.AddInt64(&errs, 1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	deadline := time.Now().Add(*duration)
	start := time.Now()
	var wg sync.WaitGroup
	var latMu sync.Mutex
	var latencies []time.Duration

	for i := 0; i < *concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if *mode == "handshake" || *mode == "resume" {
				mine := cfg
				if *mode == "resume" { // a browser's cache: one ticket per server name
					mine = cfg.Clone()
					mine.ClientSessionCache = tls.NewLRUClientSessionCache(1)
				}
				for time.Now().Before(deadline) {
					conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", *addr, mine)
					if err != nil {
						fail(err)
						continue
					}
					state := conn.ConnectionState()
					if state.DidResume {
						atomic.AddInt64(&resumed, 1)
					} else if len(state.OCSPResponse) == 0 {
						atomic.AddInt64(&missing, 1)
					}
					if *mode == "resume" && !state.DidResume && state.Version == tls.VersionTLS13 {
						// TLS 1.3 tickets follow the handshake: read until they are in.
						conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
						conn.Read(make([]byte, 1))
					}
					atomic.AddInt64(&ok, 1)
					conn.Close()
				}
				return
			}
			var local []time.Duration
			for time.Now().Before(deadline) {
				conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", *addr, cfg)
				if err != nil {
					fail(err)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				reader := bufio.NewReader(conn)
				req := []byte("GET " + *path + " HTTP/1.1\r\nHost: " + *name + "\r\n\r\n")
				for time.Now().Before(deadline) {
					t0 := time.Now()
					if _, err := conn.Write(req); err != nil {
						fail(err)
						break
					}
					resp, err := http.ReadResponse(reader, nil)
					if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
						break // the server ended keep-alive: reconnect, as HTTP clients do
					}
					if err != nil {
						fail(err)
						break
					}
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err != nil || resp.StatusCode != 200 {
						fail(fmt.Errorf("status %d: %v", resp.StatusCode, err))
						break
					}
					local = append(local, time.Since(t0))
					atomic.AddInt64(&ok, 1)
				}
				conn.Close()
			}
			latMu.Lock()
			latencies = append(latencies, local...)
			latMu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	r := result{Mode: *mode, Seconds: elapsed, MissingStaples: missing, Errors: errs, Resumed: resumed, PerSecond: float64(ok) / elapsed}
	if *mode != "requests" {
		r.Handshakes = ok
	} else {
		r.Requests = ok
		sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
		if n := len(latencies); n > 0 {
			r.P50Millis = float64(latencies[n/2].Microseconds()) / 1000
			r.P99Millis = float64(latencies[n*99/100].Microseconds()) / 1000
		}
	}
	if v := firstErr.Load(); v != nil {
		r.FirstError = v.(string)
	}
	json.NewEncoder(os.Stdout).Encode(r)
}
