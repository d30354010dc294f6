// Command envoy-sds-check validates Envoy file-based SDS files with Envoy's own v3 protos.
//
// Each argument is a DiscoveryResponse file (JSON). It must parse strictly (unknown
// fields are errors), hold exactly one Secret, and pass the protoc-gen-validate rules
// Envoy applies; a SPIFFE validator config inside is unpacked and validated too.
// Used by tests/writers/test_envoy_schema.py; exit status 1 on the first invalid file.
package main

import (
	"fmt"
	"os"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

func check(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var resp discoveryv3.DiscoveryResponse
	if err := protojson.Unmarshal(data, &resp); err != nil {
		return "", fmt.Errorf("not a DiscoveryResponse: %w", err)
	}
	if err := resp.ValidateAll(); err != nil {
		return "", err
	}
	if len(resp.Resources) != 1 {
		return "", fmt.Errorf("want exactly one resource, got %d", len(resp.Resources))
	}
	res := resp.Resources[0]
	if res.TypeUrl != secretType || (resp.TypeUrl != "" && resp.TypeUrl != secretType) {
		return "", fmt.Errorf("unexpected type %q / %q", res.TypeUrl, resp.TypeUrl)
	}
	var secret tlsv3.Secret
	if err := res.UnmarshalTo(&secret); err != nil {
		return "", err
	}
	if err := secret.ValidateAll(); err != nil {
		return "", err
	}
	kind := "tls_certificate"
	if vc := secret.GetValidationContext(); vc != nil {
		kind = "validation_context"
		if cfg := vc.GetCustomValidatorConfig(); cfg != nil {
			var spiffe tlsv3.SPIFFECertValidatorConfig
			if err := cfg.GetTypedConfig().UnmarshalTo(&spiffe); err != nil {
				return "", err
			}
			if err := spiffe.ValidateAll(); err != nil {
				return "", err
			}
			kind = fmt.Sprintf("validation_context(%s, %d trust domains)", cfg.GetName(), len(spiffe.GetTrustDomains()))
		}
	} else if secret.GetTlsCertificate() == nil {
		return "", fmt.Errorf("secret %q is neither a tls_certificate nor a validation_context", secret.GetName())
	}
	return fmt.Sprintf("%s %s", secret.GetName(), kind), nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: envoy-sds-check FILE...")
		os.Exit(2)
	}
	for _, path := range os.Args[1:] {
		what, err := check(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(1)
		}
		fmt.Printf("%s: ok %s\n", path, what)
	}
}
