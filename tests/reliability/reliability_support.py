"""Helpers for the reliability suite: sizing, and independent checks of handed-out material."""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from hypothesis import settings

from spiffe_bridge.fileset import FileSpec
from spiffe_bridge.formats import X509Options, render_x509
from spiffe_bridge.retry import Backoff
from spiffe_bridge.x509context import X509Context
from spiffe_bridge.x509svid import X509Svid

SOAK = os.environ.get("SPIFFE_BRIDGE_SOAK") == "1"

#: Reconnect quickly in tests; still exponential with jitter.
FAST = Backoff(initial=0.01, maximum=0.05)


def scale(ci: int, soak: int) -> int:
    """A loop length: ``ci`` normally, ``soak`` under ``--soak``."""
    return soak if SOAK else ci


def examples(ci: int, soak_factor: int = 25) -> settings:
    """Hypothesis settings: ``ci`` examples (the CI budget is ~2000 over the suite), more when soaking."""
    profile = settings.get_profile("spiffe-bridge-soak" if SOAK else "spiffe-bridge-ci")
    return settings(profile, max_examples=ci * soak_factor if SOAK else ci)


class RecordingBackoff(Backoff):
    """A Backoff that records every (attempt, delay) the client asked for."""

    calls: list[tuple[int, float]]
    lock: threading.Lock

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "calls", [])
        object.__setattr__(self, "lock", threading.Lock())

    def delay(self, attempt: int) -> float:
        value = super().delay(attempt)
        with self.lock:
            self.calls.append((attempt, value))
        return value

    def attempts(self) -> list[int]:
        with self.lock:
            return [a for a, _ in self.calls]


def fd_count() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    """Resident set size of this process (from /proc/self/statm)."""
    with open("/proc/self/statm") as fh:
        resident_pages = int(fh.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


# -- independent checks of what the library hands out --------------------------------------


def _public(key: Any) -> bytes:
    data: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def svid_problems(
    svid: X509Svid, roots: Sequence[x509.Certificate], now: dt.datetime | None = None
) -> list[str]:
    """Why ``svid`` must not have been handed out (empty when it is a valid SVID)."""
    now = now or dt.datetime.now(dt.UTC)
    problems = []
    leaf = svid.cert_chain[0]
    if _public(svid.private_key.public_key()) != _public(leaf.public_key()):
        problems.append("key does not match leaf")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except (x509.ExtensionNotFound, ValueError):
        uris = []
    if uris != [str(svid.spiffe_id)]:
        problems.append(f"URI SANs {uris!r} != [{svid.spiffe_id}]")
    try:
        bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            problems.append("leaf is a CA")
    except x509.ExtensionNotFound:
        pass
    for i, cert in enumerate(svid.cert_chain):
        if not cert.not_valid_before_utc - dt.timedelta(seconds=60) <= now < cert.not_valid_after_utc:
            problems.append(f"certificate {i} not valid now")
    for i in range(len(svid.cert_chain) - 1):
        if not _signed_by(svid.cert_chain[i], svid.cert_chain[i + 1]):
            problems.append(f"certificate {i} not signed by {i + 1}")
    if not any(_signed_by(svid.cert_chain[-1], root) for root in roots):
        problems.append("chain does not end at a bundle root")
    return problems


def context_problems(ctx: X509Context, now: dt.datetime | None = None) -> list[str]:
    """Problems of every SVID of ``ctx`` against its own trust domain's bundle."""
    problems = []
    if not ctx.svids:
        problems.append("no SVIDs")
    for svid in ctx.svids:
        bundle = ctx.bundle_for(svid.spiffe_id.trust_domain)
        if bundle is None or not bundle.authorities:
            problems.append(f"{svid.spiffe_id}: no bundle")
            continue
        problems += [f"{svid.spiffe_id}: {p}" for p in svid_problems(svid, bundle.authorities, now)]
    for td in ctx.federated:
        if any(s.spiffe_id.trust_domain == td for s in ctx.svids):
            problems.append(f"federated bundle for own trust domain {td}")
    return problems


def pem_certs(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data) if data.strip() else []


def pem_set_problems(chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> list[str]:
    """A written PEM set is coherent: key matches the leaf, chain verifies to the bundle."""
    try:
        chain = pem_certs(chain_pem)
        roots = pem_certs(bundle_pem)
        key = serialization.load_pem_private_key(key_pem, None)
    except ValueError as exc:
        return [f"unparseable: {exc}"]
    if not chain:
        return ["empty chain"]
    problems = []
    if _public(key.public_key()) != _public(chain[0].public_key()):
        problems.append("key does not match the leaf")
    for i in range(len(chain) - 1):
        if not _signed_by(chain[i], chain[i + 1]):
            problems.append(f"certificate {i} not signed by {i + 1}")
    if not any(_signed_by(chain[-1], root) for root in roots):
        problems.append("chain does not verify against the bundle")
    return problems


def pem_specs(ctx: X509Context) -> list[FileSpec]:
    """spiffe-helper's three PEM files for the default SVID, as the pem format renders them."""
    return render_x509("pem", ctx, X509Options())
