// The benchmark's TLS load generator: Go's crypto/tls sends status_request in every
// ClientHello and exposes the stapled response, which `openssl s_time` cannot do.
module ocsp-stapler.dev/bench/tlsload

go 1.24
