"""Valid Workload API messages to mutate, and hypothesis strategies that mutate them."""

from __future__ import annotations

import base64
import functools
import json
import time
from dataclasses import dataclass
from typing import Any

from _support.pki import crl as make_crl
from _support.pki import svid_message
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from hypothesis import strategies as st

from spiffe_bridge._encoding import b64url_decode
from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.devagent.ca import TrustDomainCA
from spiffe_bridge.jwtbundle import JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid


@dataclass(frozen=True)
class Pool:
    """Valid material of two trust domains (own one with an intermediate CA)."""

    ca: TrustDomainCA
    other_root: TrustDomainCA  # same trust domain name, different root
    fed: TrustDomainCA
    x509_response: Any
    x509_bundles: Any
    jwt_bundles: Any
    crl: bytes
    spare_ders: tuple[bytes, ...]  # DER items to splice in (certs, keys, bundles)

    issued_at: int  # fixed, so generated data does not depend on the clock (hypothesis replays)

    @functools.cached_property
    def _token(self) -> str:
        claims = {"sub": "spiffe://example.org/web", "aud": "svc", "exp": self.issued_at + 86400}
        return self.ca.sign_jwt({**claims, "iat": self.issued_at})

    def token(self) -> str:
        """One valid JWT-SVID for audience ``svc`` (valid for a day)."""
        return self._token


@functools.cache
def pool() -> Pool:
    ca = TrustDomainCA("example.org", intermediate=True)
    other = TrustDomainCA("example.org")
    fed = TrustDomainCA("partner.test")
    crl = make_crl(ca)
    svids = [
        svid_message(ca, "spiffe://example.org/web", "web"),
        svid_message(ca, "spiffe://example.org/db", "db"),
    ]
    x509_response = pb.X509SVIDResponse(svids=svids, crl=[crl], federated_bundles={fed.id: fed.bundle_der()})
    bundles = pb.X509BundlesResponse(crl=[crl], bundles={ca.id: ca.bundle_der(), fed.id: fed.bundle_der()})
    jwt_bundles = pb.JWTBundlesResponse(bundles={ca.id: ca.jwks_json(), fed.id: fed.jwks_json()})
    spare = (
        other.bundle_der(),
        fed.bundle_der(),
        svid_message(other, "spiffe://example.org/web").x509_svid,
        svid_message(other, "spiffe://example.org/web").x509_svid_key,
        svid_message(fed, "spiffe://partner.test/x").x509_svid,
        crl,
    )
    return Pool(ca, other, fed, x509_response, bundles, jwt_bundles, crl, spare, int(time.time()))


# -- byte and text mutations --------------------------------------------------------------------


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes, spares: tuple[bytes, ...] = ()) -> bytes:
    """``data`` after one hostile edit: random, truncated, flipped, spliced, length-tampered..."""
    ops = ["random", "truncate", "flip", "set", "insert", "delete", "append", "empty", "length"]
    if spares:
        ops.append("splice")
    op = draw(st.sampled_from(ops))
    n = len(data)
    if op == "random" or n == 0:
        return draw(st.binary(max_size=256))
    i = draw(st.integers(0, n - 1))
    if op == "truncate":
        return data[:i]
    if op == "flip":
        return data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1 :]
    if op == "set":
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    if op == "insert":
        return data[:i] + draw(st.binary(min_size=1, max_size=16)) + data[i:]
    if op == "delete":
        j = draw(st.integers(i, min(n, i + 64)))
        return data[:i] + data[j:]
    if op == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    if op == "empty":
        return b""
    if op == "splice":
        spare = draw(st.sampled_from(spares))
        return draw(st.sampled_from([data + spare, spare + data, data[:i] + spare, spare]))
    # "length": rewrite a DER length octet right after a SEQUENCE tag
    tags = [k for k in range(n - 1) if data[k] == 0x30] or [0]
    k = draw(st.sampled_from(tags))
    return (
        data[: k + 1]
        + bytes([draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x84, 0x85, 0xFF]))])
        + data[k + 2 :]
    )


HOSTILE_TEXT = [
    "",
    "spiffe://",
    "spiffe://example.org",
    "spiffe://EXAMPLE.org/web",
    "spiffe://example.org/web/",
    "spiffe://example.org/../web",
    "spiffe://example.org/web?x=1",
    "spiffe://example.org/web#f",
    "spiffe://user@example.org/web",
    "spiffe://example.org:8080/web",
    "spiffe://partner.test/x",
    "spiffe://example.org/db",
    "https://example.org/web",
    "spiffe://ex%41mple.org/web",
    "spiffe://example.org/" + "a" * 3000,
    "spiffe://\u00e9xample.org/web",
    "\x00",
]


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """``text`` replaced by a hostile SPIFFE-ID-like string, random text, or a small edit."""
    op = draw(st.sampled_from(["hostile", "random", "edit"]))
    if op == "hostile":
        return draw(st.sampled_from(HOSTILE_TEXT))
    if op == "random":
        return draw(st.text(max_size=64))
    if not text:
        return draw(st.text(max_size=8))
    i = draw(st.integers(0, len(text) - 1))
    return text[:i] + draw(st.text(max_size=4)) + text[i + 1 :]


# -- X.509 messages ------------------------------------------------------------------------------

SVID_BYTES_FIELDS = ("x509_svid", "x509_svid_key", "bundle")
X509_EDITS = (
    "svid_bytes",
    "svid_text",
    "swap",
    "drop_svid",
    "dup_svid",
    "fed_value",
    "fed_key",
    "fed_own",
    "crl",
)


@st.composite
def hostile_x509_response(draw: st.DrawFn) -> Any:
    """A copy of the pool's valid X509SVIDResponse with 1-3 hostile edits."""
    p = pool()
    msg = pb.X509SVIDResponse()
    msg.CopyFrom(p.x509_response)
    for _ in range(draw(st.integers(1, 3))):
        what = draw(
            st.sampled_from(
                [
                    "svid_bytes",
                    "svid_text",
                    "swap",
                    "drop_svid",
                    "dup_svid",
                    "fed_value",
                    "fed_key",
                    "fed_own",
                    "crl",
                ]
            )
        )
        if what in ("svid_bytes", "svid_text", "swap") and not msg.svids:
            what = "crl"
        if what == "svid_bytes":
            svid = msg.svids[draw(st.integers(0, len(msg.svids) - 1))]
            name = draw(st.sampled_from(SVID_BYTES_FIELDS))
            setattr(svid, name, draw(mutated_bytes(getattr(svid, name), p.spare_ders)))
        elif what == "svid_text":
            svid = msg.svids[draw(st.integers(0, len(msg.svids) - 1))]
            name = draw(st.sampled_from(("spiffe_id", "hint")))
            setattr(svid, name, draw(mutated_text(getattr(svid, name))))
        elif what == "swap" and len(msg.svids) > 1:
            name = draw(st.sampled_from((*SVID_BYTES_FIELDS, "spiffe_id")))
            a, b = msg.svids[0], msg.svids[1]
            va, vb = getattr(a, name), getattr(b, name)
            setattr(a, name, vb)
            setattr(b, name, va)
        elif what == "drop_svid" and msg.svids:
            del msg.svids[draw(st.integers(0, len(msg.svids) - 1))]
        elif what == "dup_svid" and msg.svids:
            msg.svids.add().CopyFrom(msg.svids[0])
        elif what == "fed_value":
            key = p.fed.id
            msg.federated_bundles[key] = draw(
                mutated_bytes(msg.federated_bundles.get(key, b""), p.spare_ders)
            )
        elif what == "fed_key":
            value = msg.federated_bundles.pop(p.fed.id, p.fed.bundle_der())
            msg.federated_bundles[draw(mutated_text(p.fed.id))] = value
        elif what == "fed_own":
            msg.federated_bundles[p.ca.id] = draw(
                st.sampled_from([p.ca.bundle_der(), b"", p.other_root.bundle_der()])
            )
        else:
            if msg.crl and draw(st.booleans()):
                msg.crl[0] = draw(mutated_bytes(msg.crl[0], p.spare_ders))
            else:
                msg.crl.append(draw(mutated_bytes(p.crl, p.spare_ders)))
    return msg


@st.composite
def hostile_x509_bundles(draw: st.DrawFn) -> Any:
    """A copy of the pool's X509BundlesResponse with 1-3 hostile edits."""
    p = pool()
    msg = pb.X509BundlesResponse()
    msg.CopyFrom(p.x509_bundles)
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(["value", "key", "drop", "crl"]))
        keys = sorted(msg.bundles)
        if what == "value" and keys:
            key = draw(st.sampled_from(keys))
            msg.bundles[key] = draw(mutated_bytes(msg.bundles[key], p.spare_ders))
        elif what == "key" and keys:
            key = draw(st.sampled_from(keys))
            value = msg.bundles.pop(key)
            msg.bundles[draw(mutated_text(key))] = value
        elif what == "drop" and keys:
            del msg.bundles[draw(st.sampled_from(keys))]
        else:
            msg.crl.append(draw(mutated_bytes(p.crl, p.spare_ders)))
    return msg


# -- JSON / JWKS / JWT ----------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=16),
    st.sampled_from(
        ["EC", "RSA", "oct", "P-256", "P-384", "P-521", "jwt-svid", "x509-svid", "ES256", "RS256"]
    ),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


@st.composite
def mutated_json(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` with one subtree replaced or removed (numbers as big, odd or non-finite as they come)."""
    path = draw(st.sampled_from(_paths(doc)))
    if path and draw(st.booleans()) and isinstance(path[-1], str):
        # delete a member instead
        parent = path[:-1]
        node: Any = doc
        for part in parent:
            node = node[part]
        return _replace(doc, parent, {k: v for k, v in node.items() if k != path[-1]})
    return _replace(doc, path, draw(json_values))


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


@st.composite
def hostile_jwks(draw: st.DrawFn, jwks: bytes) -> bytes:
    """A JWKS document mutated structurally (JSON) or as bytes."""
    try:
        doc = json.loads(jwks)
    except ValueError:  # an earlier edit garbled it already
        doc = None
    if doc is not None and draw(st.booleans()):
        return dumps(draw(mutated_json(doc)))
    return draw(mutated_bytes(jwks))


@st.composite
def hostile_jwt_bundles(draw: st.DrawFn) -> Any:
    p = pool()
    msg = pb.JWTBundlesResponse()
    msg.CopyFrom(p.jwt_bundles)
    for _ in range(draw(st.integers(1, 2))):
        keys = sorted(msg.bundles)
        what = draw(st.sampled_from(["value", "key", "drop"]))
        if what == "value" and keys:
            key = draw(st.sampled_from(keys))
            msg.bundles[key] = draw(hostile_jwks(msg.bundles[key]))
        elif what == "key" and keys:
            key = draw(st.sampled_from(keys))
            value = msg.bundles.pop(key)
            msg.bundles[draw(mutated_text(key))] = value
        elif keys:
            del msg.bundles[draw(st.sampled_from(keys))]
    return msg


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def hostile_token(draw: st.DrawFn) -> str:
    """A JWT-SVID with hostile header/claims (re-signed, so only the claims are wrong) or bytes."""
    p = pool()
    now = p.issued_at
    claims: dict[str, Any] = {"sub": "spiffe://example.org/web", "aud": "svc", "exp": now + 86400, "iat": now}
    header: dict[str, Any] = {"alg": "ES256", "kid": p.ca.jwt_authorities[0].kid, "typ": "JWT"}
    op = draw(st.sampled_from(["claims", "header", "both", "segment", "string"]))
    if op in ("claims", "both"):
        claims = draw(mutated_json(claims))
    if op in ("header", "both"):
        header = draw(mutated_json(header))
    if op in ("claims", "header", "both"):
        # a real signature over whatever header and claims came out, objects or not
        return sign_raw(p.ca, dumps(header), dumps(claims))
    token = p.token()
    parts = token.split(".")
    if op == "segment":
        i = draw(st.integers(0, 2))
        raw = b64url_decode(parts[i])
        parts[i] = draw(st.one_of(st.builds(b64url, mutated_bytes(raw)), mutated_text(parts[i])))
        return ".".join(parts)
    return draw(mutated_text(token))


def sign_raw(ca: TrustDomainCA, header: bytes, claims: bytes) -> str:
    """ES256-sign arbitrary header/claims bytes with the CA's current JWT key."""
    key = ca.jwt_authorities[0].private_key
    signing_input = f"{b64url(header)}.{b64url(claims)}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def jwt_problems(svid: JwtSvid, token: str, audience: str, bundles: JwtBundleSet) -> list[str]:
    """Why an accepted token must not have been accepted (independent re-check)."""
    problems = []
    head_b64, body_b64, sig_b64 = token.split(".")
    header = json.loads(b64url_decode(head_b64))
    claims = json.loads(b64url_decode(body_b64))
    if header.get("alg") != "ES256":
        problems.append(f"alg {header.get('alg')!r}")
    if "crit" in header:  # RFC 7515 4.1.11: extensions we do not understand must be rejected
        problems.append("critical header extensions")
    if claims.get("sub") != str(svid.spiffe_id):
        problems.append("subject differs")
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        problems.append(f"audience {aud!r}")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or not exp > time.time():
        problems.append(f"exp {exp!r}")
    bundle = bundles.bundles.get(svid.spiffe_id.trust_domain)
    if bundle is None:
        return [*problems, "no bundle for the subject's trust domain"]
    sig = b64url_decode(sig_b64)
    der_sig = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    verified = False
    for key in bundle.keys.values():
        if isinstance(key, ec.EllipticCurvePublicKey) and len(sig) == 64:
            try:
                key.verify(der_sig, f"{head_b64}.{body_b64}".encode(), ec.ECDSA(hashes.SHA256()))
                verified = True
            except Exception:
                continue
    if not verified:
        problems.append("signature does not verify with any bundle key")
    return problems
