"""The CA of a foreign trust domain that the interop SPIRE server federates with.

Self-contained (stdlib + ``cryptography``): its public parts become the SPIFFE
bundle given to ``spire-server bundle set``; its private keys stay in the test
process so tests can mint foreign X.509-SVIDs or JWT-SVIDs signed by it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any


class FederatedCA:
    """Self-signed X.509 CA and JWT signing key of a foreign trust domain.

    Its public parts are the bundle given to ``spire-server bundle set``; the
    private keys stay here, so tests can mint foreign SVIDs signed by it.
    """

    def __init__(self, trust_domain: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.trust_domain = trust_domain
        now = _dt.datetime.now(_dt.UTC)
        self.x509_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spiffe-bridge interop"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} test CA"),
            ]
        )
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.x509_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=1))
            .not_valid_after(now + _dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.x509_key.public_key()), critical=False
            )
            .sign(self.x509_key, hashes.SHA256())
        )
        self.jwt_key = ec.generate_private_key(ec.SECP256R1())
        self.jwt_kid = base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("=")
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        self.key_pem = self.x509_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.jwt_key_pem = self.jwt_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @staticmethod
    def _b64u(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    def _ec_jwk(self, key: Any) -> dict[str, str]:
        nums = key.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": self._b64u(nums.x.to_bytes(32, "big")),
            "y": self._b64u(nums.y.to_bytes(32, "big")),
        }

    def spiffe_bundle(self) -> dict[str, Any]:
        """The SPIFFE bundle (JWKS) document of this trust domain."""
        return {
            "keys": [
                {
                    "use": "x509-svid",
                    **self._ec_jwk(self.x509_key),
                    "x5c": [base64.b64encode(self.cert_der).decode()],
                },
                {"use": "jwt-svid", "kid": self.jwt_kid, **self._ec_jwk(self.jwt_key)},
            ],
            "spiffe_sequence": 1,
            "spiffe_refresh_hint": 300,
        }

    def write(self, directory: Path) -> dict[str, Path]:
        paths = {
            "bundle": directory / f"{self.trust_domain}.bundle.json",
            "cert": directory / f"{self.trust_domain}.ca.pem",
            "key": directory / f"{self.trust_domain}.ca.key",
            "jwt_key": directory / f"{self.trust_domain}.jwt.key",
        }
        paths["bundle"].write_text(json.dumps(self.spiffe_bundle(), indent=2))
        paths["cert"].write_bytes(self.cert_pem)
        paths["key"].write_bytes(self.key_pem)
        paths["jwt_key"].write_bytes(self.jwt_key_pem)
        for p in (paths["key"], paths["jwt_key"]):
            p.chmod(0o600)
        return paths
