"""Who may talk to us: authorizers that accept or refuse a peer by SPIFFE ID.

An authorizer is any callable ``authorizer(peer_id) -> None`` that raises
``PeerNotAuthorizedError`` to refuse. It runs only after the peer's
certificate chain has been verified against the bundle of the peer's own
trust domain, so the ID it sees is authentic. Refusals always name the peer's
ID and the rule it failed, so a log line says who was turned away and why.

The refusal errors subclass ``ssl.SSLCertVerificationError``: code that
already handles failed TLS handshakes (asyncio, http.client, urllib3) treats
them as such.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from spiffe_bridge.errors import SpiffeBridgeError
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain


class PeerRefusedError(ssl.SSLCertVerificationError, SpiffeBridgeError):
    """The peer was refused: its certificate is not a valid SVID of a trusted trust domain,
    or its SPIFFE ID is not authorized. ``peer_id`` is None when no valid ID could be read."""

    def __init__(self, message: str, peer_id: SpiffeId | None = None) -> None:
        super().__init__(message)
        self.peer_id = peer_id
        self.reason = message
        self.verify_message = message

    def __str__(self) -> str:
        return self.reason


class PeerNotAuthorizedError(PeerRefusedError):
    """The peer's SVID is valid, but an authorizer refused its SPIFFE ID."""

    peer_id: SpiffeId

    def __init__(self, peer_id: SpiffeId, rule: str) -> None:
        super().__init__(f"peer {peer_id} is not authorized: {rule}", peer_id)
        self.rule = rule


@runtime_checkable
class Authorizer(Protocol):
    """Accepts a verified peer SPIFFE ID by returning, refuses by raising PeerNotAuthorizedError."""

    def __call__(self, peer_id: SpiffeId, /) -> None: ...


def _as_id(value: SpiffeId | str) -> SpiffeId:
    return value if isinstance(value, SpiffeId) else SpiffeId.parse(value)


def _as_td(value: TrustDomain | str) -> TrustDomain:
    return value if isinstance(value, TrustDomain) else TrustDomain.parse(value)


class _Rule:
    """Base of the built-in authorizers: a description and the trust domains it can admit."""

    #: Trust domains this rule can ever accept, or None for "any" (gRPC clients use it to
    #: restrict the roots they trust for the server).
    trust_domains: frozenset[TrustDomain] | None = None
    description = ""

    def __repr__(self) -> str:
        return f"<authorizer: {self.description}>"


class AuthorizeAny(_Rule):
    """Any peer with a valid SVID from a trusted trust domain (own or federated)."""

    description = "any SPIFFE ID of a trusted trust domain"

    def __call__(self, peer_id: SpiffeId, /) -> None:
        return None


class AuthorizeOneOf(_Rule):
    """Exactly these SPIFFE IDs (byte-for-byte, as the spec asks)."""

    def __init__(self, ids: Iterable[SpiffeId | str]) -> None:
        self.ids = frozenset(_as_id(i) for i in ids)
        if not self.ids:
            raise ValueError("authorize_one_of needs at least one SPIFFE ID")
        self.trust_domains = frozenset(i.trust_domain for i in self.ids)
        names = sorted(str(i) for i in self.ids)
        self.description = f"expected {names[0]}" if len(names) == 1 else f"expected one of {names}"

    def __call__(self, peer_id: SpiffeId, /) -> None:
        if peer_id not in self.ids:
            raise PeerNotAuthorizedError(peer_id, self.description)


class AuthorizeMemberOf(_Rule):
    """Any workload of these trust domains."""

    def __init__(self, trust_domains: Iterable[TrustDomain | str]) -> None:
        members = frozenset(_as_td(td) for td in trust_domains)
        if not members:
            raise ValueError("authorize_member_of needs at least one trust domain")
        self.members = members
        self.trust_domains = members
        names = sorted(td.name for td in members)
        self.description = (
            f"expected a member of {names[0]}" if len(names) == 1 else f"expected a member of one of {names}"
        )

    def __call__(self, peer_id: SpiffeId, /) -> None:
        if peer_id.trust_domain not in self.members:
            raise PeerNotAuthorizedError(peer_id, self.description)


class AuthorizeIf(_Rule):
    """A custom predicate over the peer's SPIFFE ID; ``description`` explains refusals.

    A predicate that raises refuses the peer (fail closed); the exception is chained.
    """

    def __init__(self, predicate: Callable[[SpiffeId], bool], description: str) -> None:
        self.predicate = predicate
        self.description = description

    def __call__(self, peer_id: SpiffeId, /) -> None:
        try:
            accepted = self.predicate(peer_id)
        except PeerNotAuthorizedError:
            raise
        except Exception as exc:
            raise PeerNotAuthorizedError(
                peer_id, f"{self.description} (the check raised {type(exc).__name__}: {exc})"
            ) from exc
        if not accepted:
            raise PeerNotAuthorizedError(peer_id, self.description)


def authorize_any() -> AuthorizeAny:
    """Accept any peer whose SVID verifies against the bundle of its trust domain."""
    return AuthorizeAny()


def authorize_id(spiffe_id: SpiffeId | str) -> AuthorizeOneOf:
    """Accept only this SPIFFE ID."""
    return AuthorizeOneOf([spiffe_id])


def authorize_one_of(*spiffe_ids: SpiffeId | str) -> AuthorizeOneOf:
    """Accept any of these SPIFFE IDs."""
    return AuthorizeOneOf(spiffe_ids)


def authorize_member_of(*trust_domains: TrustDomain | str) -> AuthorizeMemberOf:
    """Accept any workload of these trust domains (``example.org`` or ``spiffe://example.org``)."""
    return AuthorizeMemberOf(trust_domains)


def authorize_if(predicate: Callable[[SpiffeId], bool], description: str) -> AuthorizeIf:
    """Accept peers for which ``predicate(peer_id)`` is true; ``description`` is the rule's wording
    in refusals, e.g. ``"expected a path under /billing/"``."""
    return AuthorizeIf(predicate, description)


def trust_domains_of(authorizer: Authorizer) -> frozenset[TrustDomain] | None:
    """The trust domains an authorizer can ever accept, or None when it cannot say."""
    return getattr(authorizer, "trust_domains", None) if isinstance(authorizer, _Rule) else None
