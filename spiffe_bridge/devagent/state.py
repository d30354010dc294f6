"""The dev agent's controller: identities, CAs and federation, and the parts it is made of.

Everything a test may change lives behind one condition variable, so a mutation and the
push it causes are atomic, and tests can wait on counters (calls, open streams, sent
messages) instead of sleeping. ``AgentState`` keeps the identities and trust domains
itself and composes the rest: fault plans (``faults.py``), the calls being answered and
their counters (``desk.py``), the PermissionDenied window (``denial.py``). The gRPC handlers
in ``servicer.py`` see it only through ``call_desk`` (the ``calls.AgentCalls`` interface).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge._wire import STREAMING_RPCS, Rpc
from spiffe_bridge.loglist import capped

from .ca import KeyType, TrustDomainCA, X509SvidMaterial
from .calls import AgentCalls, Outgoing
from .denial import DenialWindow
from .desk import CallDesk, StreamCounters
from .faults import FaultControls, FaultPlan
from .identity import Identity, as_identity, trust_domain_name

_log = logging.getLogger("spiffe_bridge.devagent")
X509_STREAMS = frozenset({Rpc.FETCH_X509_SVID, Rpc.FETCH_X509_BUNDLES})
ALL_STREAMS = STREAMING_RPCS


class AgentState(FaultControls, StreamCounters):
    """Controller of everything the dev agent serves; safe to use from any thread."""

    def __init__(
        self,
        trust_domain: str = "example.org",
        identities: Iterable[Identity | str] | None = None,
        *,
        ttl: float = 3600.0,
        jwt_ttl: float = 300.0,
        intermediate: bool = False,
        key_type: KeyType = "ec-p256",
        federate_with: Iterable[str] = (),
    ) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._ca = TrustDomainCA(trust_domain, intermediate=intermediate, key_type=key_type)
        self._federated: dict[str, TrustDomainCA] = {}
        for td in federate_with:
            name = trust_domain_name(td)
            if name == self._ca.trust_domain:
                raise ValueError("cannot federate with the agent's own trust domain")
            self._federated[name] = TrustDomainCA(name)
        self._ttl = ttl
        self._jwt_ttl = jwt_ttl
        self._crls: list[bytes] = []
        self._denial = DenialWindow(self._cond)
        self._faults = {rpc: FaultPlan() for rpc in Rpc}
        self._desk = CallDesk(self._cond, self._faults, self, self._build)
        ids = identities if identities is not None else [f"{self._ca.id}/workload"]
        self._identities = self._checked(ids)
        self._svids = self._issue(self._identities)

    # ----- identities and X.509 material -----
    @property
    def trust_domain(self) -> str:
        """Bare name of the agent's own trust domain."""
        return self._ca.trust_domain

    @property
    def ca(self) -> TrustDomainCA:
        """The own trust domain's CA (mutate it only through the agent, to get pushes)."""
        return self._ca

    @property
    def identities(self) -> tuple[Identity, ...]:
        """Identities in response order; the first is the default SVID."""
        with self._cond:
            return tuple(self._identities)

    @property
    def svids(self) -> tuple[X509SvidMaterial, ...]:
        """The X509-SVIDs currently served, same order as ``identities``."""
        with self._cond:
            return tuple(self._svids)

    @property
    def ttl(self) -> float:
        """X509-SVID lifetime in seconds, applied at the next issuance."""
        return self._ttl

    def set_ttl(self, seconds: float, *, jwt_seconds: float | None = None) -> None:
        """Change SVID lifetimes; takes effect at the next rotation or mint."""
        with self._cond:
            self._ttl = seconds
            if jwt_seconds is not None:
                self._jwt_ttl = jwt_seconds

    def set_identities(self, identities: Iterable[Identity | str]) -> None:
        """Replace the identities (``ID[#hint]`` strings allowed), issue and push.

        An empty list makes every fetch fail with PermissionDenied, like a
        SPIRE agent whose registration entries were deleted.
        """
        with self._cond:
            checked = self._checked(identities)
            self._identities = checked
            self._svids = self._issue(checked)
            self._desk.broadcast(ALL_STREAMS)

    def add_identity(self, identity: Identity | str) -> None:
        """Append one identity and push."""
        with self._cond:
            self.set_identities([*self._identities, as_identity(identity)])

    def remove_identity(self, spiffe_id: str) -> None:
        """Drop every identity with this SPIFFE ID and push."""
        with self._cond:
            self.set_identities([i for i in self._identities if i.spiffe_id != spiffe_id])

    def rotate(self) -> tuple[X509SvidMaterial, ...]:
        """Re-issue all X509-SVIDs with new keys and push to the X.509 streams."""
        with self._cond:
            self._svids = self._issue(self._identities)
            _log.info("rotated %d X509-SVIDs", len(self._svids))
            self._desk.broadcast(X509_STREAMS)
            return tuple(self._svids)

    def rotate_x509_bundle(self, *, keep_previous: bool = True) -> None:
        """New root (and intermediate) CA, SVIDs re-issued under it, pushed.

        With ``keep_previous`` the old root stays in the bundle, as during a
        real CA rotation; call ``drop_previous_x509_authorities`` to finish.
        """
        with self._cond:
            self._ca.rotate_x509_authority(keep_previous=keep_previous)
            self._svids = self._issue(self._identities)
            _log.info("rotated X.509 authority of %s", self._ca.id)
            self._desk.broadcast(X509_STREAMS)

    def drop_previous_x509_authorities(self) -> None:
        """Remove old roots from the bundle and push."""
        with self._cond:
            self._ca.drop_previous_x509_authorities()
            self._desk.broadcast(X509_STREAMS)

    def set_crls(self, crls: Iterable[bytes]) -> None:
        """DER CRLs to include in X.509 responses; pushed."""
        with self._cond:
            self._crls = list(crls)
            self._desk.broadcast(X509_STREAMS)

    # ----- JWT -----
    def rotate_jwt_bundle(self, *, keep_previous: bool = True) -> str:
        """New JWT signing key (returned kid); JWT bundles pushed."""
        with self._cond:
            kid = self._ca.rotate_jwt_authority(keep_previous=keep_previous).kid
            self._desk.broadcast({Rpc.FETCH_JWT_BUNDLES})
            return kid

    def mint_jwt_svid(
        self, audience: Iterable[str], spiffe_id: str | None = None, ttl: float | None = None
    ) -> str:
        """A JWT-SVID for ``spiffe_id`` (default: first identity), as FetchJWTSVID mints it."""
        with self._cond:
            if not spiffe_id and not self._identities:
                raise LookupError("no identity issued")
            sid = spiffe_id or self._identities[0].spiffe_id
            return self._ca.mint_jwt_svid(sid, audience, ttl=ttl or self._jwt_ttl)

    def jwt_svid_response(self, audience: list[str], spiffe_id: str = "") -> pb.JWTSVIDResponse:
        """The answer FetchJWTSVID gives: JWT-SVIDs for all identities or the one asked for.

        Raises LookupError if ``spiffe_id`` is not one of the identities.
        """
        with self._cond:
            chosen = [i for i in self._identities if not spiffe_id or i.spiffe_id == spiffe_id]
            if not chosen:
                raise LookupError(spiffe_id)
            svids = [
                pb.JWTSVID(
                    spiffe_id=i.spiffe_id,
                    svid=self._ca.mint_jwt_svid(i.spiffe_id, audience, ttl=self._jwt_ttl),
                    hint=i.hint,
                )
                for i in chosen
            ]
            return pb.JWTSVIDResponse(svids=svids)

    def validate_jwt_svid(self, token: str, audience: str) -> tuple[str, dict[str, Any]]:
        """Check a JWT-SVID against the signing keys of its subject's trust domain.

        Returns (SPIFFE ID, claims); raises ``JwtSvidError``. The check is the agent's own
        (``jwtsvid.verify``), independent of the library's validator it is compared with.
        """
        from spiffe_bridge.errors import JwtSvidError

        from .jwtsvid import TokenRejected, verify

        def key_for(trust_domain: str, kid: str) -> Any:
            with self._cond:
                ca = self._ca if trust_domain == self._ca.trust_domain else self._federated.get(trust_domain)
                return ca.jwt_key(kid) if ca is not None else None

        try:
            return verify(token, audience, key_for)
        except TokenRejected as exc:
            raise JwtSvidError(str(exc)) from None

    # ----- federation -----
    @property
    def federated_trust_domains(self) -> dict[str, TrustDomainCA]:
        """Federated trust domain name -> its CA (use it to issue peer SVIDs)."""
        with self._cond:
            return dict(self._federated)

    def add_federated_trust_domain(self, trust_domain: str) -> TrustDomainCA:
        """Federate with a new trust domain (own roots and JWT key) and push its bundles."""
        with self._cond:
            name = trust_domain_name(trust_domain)
            if name == self.trust_domain:
                raise ValueError("cannot federate with the agent's own trust domain")
            ca = self._federated.setdefault(name, TrustDomainCA(name))
            self._desk.broadcast(ALL_STREAMS)
            return ca

    def remove_federated_trust_domain(self, trust_domain: str) -> None:
        """Stop federating; the next pushes omit its bundles (a redaction)."""
        with self._cond:
            self._federated.pop(trust_domain_name(trust_domain), None)
            self._desk.broadcast(ALL_STREAMS)

    def rotate_federated_bundle(self, trust_domain: str, *, keep_previous: bool = True) -> None:
        """Rotate a federated domain's root and JWT key and push."""
        with self._cond:
            ca = self._federated[trust_domain_name(trust_domain)]
            ca.rotate_x509_authority(keep_previous=keep_previous)
            ca.rotate_jwt_authority(keep_previous=keep_previous)
            self._desk.broadcast(ALL_STREAMS)

    # ----- permission denied window -----
    def deny(self, duration: float | None = None) -> None:
        """Answer "no identity issued" for ``duration`` seconds (None: until ``allow``).

        Open streams are terminated with PermissionDenied too. Waiters are
        woken when the window ends, so ``wait_until(lambda: not agent.denied)``
        returns promptly.
        """
        self._denial.open(duration)

    def allow(self) -> None:
        """End the PermissionDenied window now."""
        self._denial.close()

    @property
    def denied(self) -> bool:
        """True while callers get PermissionDenied (window active or no identities)."""
        with self._cond:
            return not self._identities or self._denial.active

    # ----- responses (full current state, the way every push carries it) -----
    def x509_svid_response(self) -> pb.X509SVIDResponse:
        """The message FetchX509SVID streams right now."""
        with self._cond:
            bundle = self._ca.bundle_der()
            svids = [
                pb.X509SVID(
                    spiffe_id=m.spiffe_id,
                    x509_svid=m.chain_der(),
                    x509_svid_key=m.key_der(),
                    bundle=bundle,
                    hint=m.hint,
                )
                for m in self._svids
            ]
            federated = {ca.id: ca.bundle_der() for ca in self._federated.values()}
            return pb.X509SVIDResponse(svids=svids, crl=self._crls, federated_bundles=federated)

    def x509_bundles_response(self) -> pb.X509BundlesResponse:
        """The message FetchX509Bundles streams right now (own + federated)."""
        with self._cond:
            bundles = {ca.id: ca.bundle_der() for ca in self._all_cas()}
            return pb.X509BundlesResponse(crl=self._crls, bundles=bundles)

    def jwt_bundles_response(self) -> pb.JWTBundlesResponse:
        """The message FetchJWTBundles streams right now (JWKS per trust domain)."""
        with self._cond:
            return pb.JWTBundlesResponse(bundles={ca.id: ca.jwks_json() for ca in self._all_cas()})

    # ----- internals -----
    def _checked(self, identities: Iterable[Identity | str]) -> list[Identity]:
        checked = [as_identity(i) for i in identities]
        hints = [i.hint for i in checked if i.hint]
        if len(hints) != len(set(hints)):
            raise ValueError("hints must be unique")
        for identity in checked:
            if identity.trust_domain != self.trust_domain:
                raise ValueError(f"{identity.spiffe_id} is not in trust domain {self.trust_domain}")
        return checked

    def _issue(self, identities: list[Identity]) -> list[X509SvidMaterial]:
        return [
            self._ca.issue_x509_svid(i.spiffe_id, ttl=self._ttl, hint=i.hint, dns_names=i.dns_names)
            for i in identities
        ]

    def _all_cas(self) -> list[TrustDomainCA]:
        return [self._ca, *self._federated.values()]

    def _build(self, rpc: Rpc) -> Outgoing:
        """The full-state message of a streaming RPC, with its log line."""
        if rpc is Rpc.FETCH_X509_SVID:
            feds = ",".join(sorted(self._federated))
            svids = capped(f"{m.spiffe_id} serial={m.serial_number:x}" for m in self._svids)
            return Outgoing(self.x509_svid_response(), f"svids=[{svids}] federated=[{feds}]")
        if rpc is Rpc.FETCH_X509_BUNDLES:
            tds = capped(f"{ca.id} roots={len(ca.roots)}" for ca in self._all_cas())
            return Outgoing(self.x509_bundles_response(), f"bundles=[{tds}]")
        kids = capped(f"{ca.id} kids={[a.kid for a in ca.jwt_authorities]}" for ca in self._all_cas())
        return Outgoing(self.jwt_bundles_response(), f"bundles=[{kids}]")

    # ----- the servicer's interface, and stopping -----
    @property
    def call_desk(self) -> AgentCalls:
        """What the gRPC servicer answers calls through; tests need not use it."""
        return self._desk

    def _end_all_streams(self) -> None:
        """Make every current call handler return (``DevAgent.stop``)."""
        self._desk.end_all()
