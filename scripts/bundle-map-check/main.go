// Command bundle-map-check validates a SPIFFE bundle map (gRFC A87) with go-spiffe's own parser.
//
// The first argument is the bundle map JSON: an object whose only member is
// "trust_domains", mapping each trust domain name to a SPIFFE bundle that
// spiffebundle.Parse accepts and that holds at least one X.509 authority. Each
// further argument is a PEM file whose CERTIFICATE blocks are an X509-SVID chain
// (other block types, such as a leading PRIVATE KEY, are ignored); it must verify
// against the map with x509svid.Verify. Used by tests/writers/test_format_bundle_map.py;
// exit status 1 on the first failure.
package main

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"sort"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

type bundleMap struct {
	TrustDomains map[string]json.RawMessage `json:"trust_domains"`
}

func loadMap(path string) (*spiffebundle.Set, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var doc bundleMap
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not a bundle map: %w", err)
	}
	if len(doc.TrustDomains) == 0 {
		return nil, fmt.Errorf("no trust_domains")
	}
	names := make([]string, 0, len(doc.TrustDomains))
	for name := range doc.TrustDomains {
		names = append(names, name)
	}
	sort.Strings(names)
	set := spiffebundle.NewSet()
	for _, name := range names {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return nil, fmt.Errorf("trust domain %q: %w", name, err)
		}
		if td.Name() != name {
			return nil, fmt.Errorf("trust domain key %q is not in canonical form", name)
		}
		bundle, err := spiffebundle.Parse(td, doc.TrustDomains[name])
		if err != nil {
			return nil, fmt.Errorf("trust domain %q: %w", name, err)
		}
		if len(bundle.X509Authorities()) == 0 {
			return nil, fmt.Errorf("trust domain %q: no x509-svid authorities", name)
		}
		set.Add(bundle)
		fmt.Printf("%s: ok %d x509 authorities\n", name, len(bundle.X509Authorities()))
	}
	return set, nil
}

func verifyChain(path string, set *spiffebundle.Set) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var chain []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return "", err
		}
		chain = append(chain, cert)
	}
	if len(chain) == 0 {
		return "", fmt.Errorf("no certificates")
	}
	id, _, err := x509svid.Verify(chain, set)
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bundle-map-check MAP.json [SVID.pem...]")
		os.Exit(2)
	}
	set, err := loadMap(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	for _, path := range os.Args[2:] {
		id, err := verifyChain(path, set)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(1)
		}
		fmt.Printf("%s: verified %s\n", path, id)
	}
}
