module spiffe-bridge/scripts/bundle-map-check

go 1.24.0

require github.com/spiffe/go-spiffe/v2 v2.8.1

require github.com/go-jose/go-jose/v4 v4.1.4 // indirect
