"""In-memory certificate authority for one trust domain.

Issues X509-SVIDs that follow X509-SVID.md exactly (so clients can be tested
against strict validation) and JWT-SVIDs signed with a per-domain key. Not
thread-safe on its own: the dev agent serialises access with its lock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .identity import split_spiffe_id, trust_domain_name
from .jwtsvid import JWTAuthority, jwks_json, jwt_svid_claims

KeyType = Literal["ec-p256", "ec-p384", "rsa-2048"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

KEY_TYPES: tuple[KeyType, ...] = ("ec-p256", "ec-p384", "rsa-2048")
BACKDATE = dt.timedelta(seconds=30)
DEFAULT_CA_TTL = 30 * 86400.0
_ORG = "spiffe-bridge dev agent"


def generate_private_key(key_type: KeyType = "ec-p256") -> PrivateKey:
    """A fresh key of the given SPIRE-style key type."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unsupported key type {key_type!r}; choose one of {KEY_TYPES}")


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def der_concat(certs: Iterable[x509.Certificate]) -> bytes:
    """Concatenated DER, the Workload API's encoding for chains and bundles."""
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)


@dataclass(frozen=True)
class X509SvidMaterial:
    """One issued X509-SVID: chain (leaf first, then intermediates) and its key."""

    spiffe_id: str
    hint: str
    chain: tuple[x509.Certificate, ...]
    private_key: PrivateKey

    @property
    def leaf(self) -> x509.Certificate:
        """The SVID certificate itself."""
        return self.chain[0]

    @property
    def serial_number(self) -> int:
        """Leaf serial; changes on every rotation, handy for asserting pushes."""
        return self.leaf.serial_number

    def chain_der(self) -> bytes:
        """``x509_svid`` field: concatenated DER, leaf first."""
        return der_concat(self.chain)

    def key_der(self) -> bytes:
        """``x509_svid_key`` field: unencrypted PKCS#8 DER."""
        return self.private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


#: The earlier name, kept as an alias: the same class (docs/library.md, "Names").
X509SVIDMaterial = X509SvidMaterial


@dataclass(frozen=True)
class _Signer:
    cert: x509.Certificate
    key: PrivateKey

    def ski(self) -> x509.SubjectKeyIdentifier:
        return self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value


class TrustDomainCA:
    """Root (optionally plus intermediate) CA and JWT key of one trust domain."""

    def __init__(
        self,
        trust_domain: str,
        *,
        intermediate: bool = False,
        key_type: KeyType = "ec-p256",
        ca_ttl: float = DEFAULT_CA_TTL,
    ) -> None:
        self.trust_domain = trust_domain_name(trust_domain)
        self.key_type: KeyType = key_type
        self.uses_intermediate = intermediate
        self._ca_ttl = ca_ttl
        self._generation = 0
        self._roots: list[x509.Certificate] = []
        self._intermediates: tuple[x509.Certificate, ...] = ()
        self._issuer: _Signer | None = None
        self._jwt_authorities: list[JWTAuthority] = []
        self.rotate_x509_authority(keep_previous=False)
        self.rotate_jwt_authority(keep_previous=False)

    @property
    def id(self) -> str:
        """Trust domain SPIFFE ID, the Workload API's map key (``spiffe://td``)."""
        return f"spiffe://{self.trust_domain}"

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """X.509 bundle: current root first, then any kept previous roots."""
        return tuple(self._roots)

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """Certificates between leaf and root that go into ``x509_svid``."""
        return self._intermediates

    def bundle_der(self) -> bytes:
        """X.509 bundle as concatenated DER."""
        return der_concat(self._roots)

    @property
    def jwt_authorities(self) -> tuple[JWTAuthority, ...]:
        """JWT signing keys: current first, then kept previous ones."""
        return tuple(self._jwt_authorities)

    def jwks_json(self) -> bytes:
        """JWT bundle as a JWKS document."""
        return jwks_json(self._jwt_authorities)

    def rotate_x509_authority(self, *, keep_previous: bool = True) -> None:
        """New root (and intermediate); previous roots stay in the bundle if asked."""
        self._generation += 1
        now = dt.datetime.now(dt.UTC)
        not_after = now + dt.timedelta(seconds=self._ca_ttl)
        root_key = generate_private_key(self.key_type)
        root = self._ca_cert(f"root CA {self._generation}", root_key, None, None, not_after)
        signer = _Signer(root, root_key)
        self._intermediates = ()
        if self.uses_intermediate:
            key = generate_private_key(self.key_type)
            name = f"intermediate CA {self._generation}"
            cert = self._ca_cert(name, key, signer, 0, not_after)
            signer = _Signer(cert, key)
            self._intermediates = (cert,)
        self._issuer = signer
        self._roots = [root, *self._roots] if keep_previous else [root]

    def drop_previous_x509_authorities(self) -> None:
        """Keep only the current root in the bundle (end of a root rotation)."""
        del self._roots[1:]

    def rotate_jwt_authority(self, *, keep_previous: bool = True) -> JWTAuthority:
        """New JWT signing key; previous keys stay in the JWKS if asked."""
        authority = JWTAuthority.generate()
        previous = self._jwt_authorities if keep_previous else []
        self._jwt_authorities = [authority, *previous]
        return authority

    def drop_previous_jwt_authorities(self) -> None:
        """Keep only the current JWT key in the JWKS."""
        del self._jwt_authorities[1:]

    def issue_x509_svid(
        self,
        spiffe_id: str,
        *,
        ttl: float,
        hint: str = "",
        dns_names: Iterable[str] = (),
        key_type: KeyType | None = None,
    ) -> X509SvidMaterial:
        """Issue a leaf X509-SVID with a brand-new key, valid for ``ttl`` seconds.

        The lifetime is capped by the issuing CA's, as SPIRE does.
        """
        trust_domain, path = split_spiffe_id(spiffe_id)
        if trust_domain != self.trust_domain or not path:
            raise ValueError(f"{spiffe_id!r} is not a workload ID in {self.id}")
        issuer = self._current_issuer()
        dns = list(dns_names)
        key = generate_private_key(key_type or self.key_type)
        now = dt.datetime.now(dt.UTC)
        not_after = min(now + dt.timedelta(seconds=ttl), issuer.cert.not_valid_after_utc)
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG)]
        if dns:
            subject.append(x509.NameAttribute(NameOID.COMMON_NAME, dns[0]))
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
        sans += [x509.DNSName(name) for name in dns]
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=True,
            data_encipherment=False,
            key_agreement=True,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(issuer.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer.ski()),
                critical=False,
            )
            .sign(issuer.key, _hash_for(issuer.key))
        )
        return X509SvidMaterial(spiffe_id, hint, (cert, *self._intermediates), key)

    def forge_leaf(
        self,
        *,
        uris: Iterable[str],
        ca_flag: bool = False,
        key_cert_sign: bool = False,
        digital_signature: bool = True,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """For hostile-input tests: a leaf signed by the real issuing key with chosen, possibly bad, traits.

        Unlike ``issue_x509_svid`` nothing is checked: any URI SANs (none, several, not
        SPIFFE IDs), a CA flag, keyCertSign, no digitalSignature, any validity window.
        Returns the certificate (without intermediates) and its new P-256 key.
        """
        issuer = self._current_issuer()
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = x509.KeyUsage(
            digital_signature, False, False, False, False, key_cert_sign, False, False, False
        )
        sans = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris])
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(issuer.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(minutes=5))
            .not_valid_after(not_after or now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(sans, critical=True)
            .sign(issuer.key, _hash_for(issuer.key))
        )
        return cert, key

    def mint_jwt_svid(self, spiffe_id: str, audience: Iterable[str], *, ttl: float) -> str:
        """Sign a JWT-SVID (ES256, header kid + typ JWT) with the current key."""
        auds = list(audience)
        if not auds:
            raise ValueError("a JWT-SVID needs at least one audience")
        trust_domain, path = split_spiffe_id(spiffe_id)
        if trust_domain != self.trust_domain or not path:
            raise ValueError(f"{spiffe_id!r} is not a workload ID in {self.id}")
        return self._jwt_authorities[0].sign(jwt_svid_claims(spiffe_id, auds, ttl))

    def sign_jwt(self, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> str:
        """Sign arbitrary claims with the current key (for forging test tokens)."""
        return self._jwt_authorities[0].sign(claims, headers)

    def jwt_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        """The JWKS key with this ID, if any."""
        for authority in self._jwt_authorities:
            if authority.kid == kid:
                return authority.public_key
        return None

    def _current_issuer(self) -> _Signer:
        assert self._issuer is not None
        return self._issuer

    def _ca_cert(
        self,
        label: str,
        key: PrivateKey,
        parent: _Signer | None,
        path_length: int | None,
        not_after: dt.datetime,
    ) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{self.trust_domain} {label}"),
            ]
        )
        usage = x509.KeyUsage(
            digital_signature=False,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(parent.cert.subject if parent else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(self.id)]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        if parent is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(parent.ski()),
                critical=False,
            )
        signing_key = parent.key if parent else key
        return builder.sign(signing_key, _hash_for(signing_key))
