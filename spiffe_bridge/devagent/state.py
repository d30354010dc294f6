"""Thread-safe state of the dev agent: identities, CAs, denial window, faults, streams.

Everything a test may change lives here behind one condition variable, so a
mutation and the push it causes are atomic, and tests can wait on counters
(calls, open streams, sent messages) instead of sleeping. The gRPC handlers in
``servicer.py`` use the underscore "servicer hooks" at the end of the class.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge._wire import STREAMING_RPCS, Rpc
from spiffe_bridge.loglist import capped

from ._streams import Outgoing, Signal, StreamCounters, StreamHandle
from .ca import KeyType, TrustDomainCA, X509SvidMaterial
from .faults import FaultControls, FaultPlan, InjectedError, RawResponse
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
        self._deny_until: float | None = None
        self._deny_timer: threading.Timer | None = None
        self._faults = {rpc: FaultPlan() for rpc in Rpc}
        self._streams: dict[int, StreamHandle] = {}
        self._next_stream_id = 1
        self._epoch = 0
        self._calls: Counter[Rpc] = Counter()
        self._opened: Counter[Rpc] = Counter()
        self._sent: Counter[Rpc] = Counter()
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
            self._broadcast(ALL_STREAMS)

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
            self._broadcast(X509_STREAMS)
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
            self._broadcast(X509_STREAMS)

    def drop_previous_x509_authorities(self) -> None:
        """Remove old roots from the bundle and push."""
        with self._cond:
            self._ca.drop_previous_x509_authorities()
            self._broadcast(X509_STREAMS)

    def set_crls(self, crls: Iterable[bytes]) -> None:
        """DER CRLs to include in X.509 responses; pushed."""
        with self._cond:
            self._crls = list(crls)
            self._broadcast(X509_STREAMS)

    # ----- JWT -----
    def rotate_jwt_bundle(self, *, keep_previous: bool = True) -> str:
        """New JWT signing key (returned kid); JWT bundles pushed."""
        with self._cond:
            kid = self._ca.rotate_jwt_authority(keep_previous=keep_previous).kid
            self._broadcast({Rpc.FETCH_JWT_BUNDLES})
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
            self._broadcast(ALL_STREAMS)
            return ca

    def remove_federated_trust_domain(self, trust_domain: str) -> None:
        """Stop federating; the next pushes omit its bundles (a redaction)."""
        with self._cond:
            self._federated.pop(trust_domain_name(trust_domain), None)
            self._broadcast(ALL_STREAMS)

    def rotate_federated_bundle(self, trust_domain: str, *, keep_previous: bool = True) -> None:
        """Rotate a federated domain's root and JWT key and push."""
        with self._cond:
            ca = self._federated[trust_domain_name(trust_domain)]
            ca.rotate_x509_authority(keep_previous=keep_previous)
            ca.rotate_jwt_authority(keep_previous=keep_previous)
            self._broadcast(ALL_STREAMS)

    # ----- permission denied window -----
    def deny(self, duration: float | None = None) -> None:
        """Answer "no identity issued" for ``duration`` seconds (None: until ``allow``).

        Open streams are terminated with PermissionDenied too. Waiters are
        woken when the window ends, so ``wait_until(lambda: not agent.denied)``
        returns promptly.
        """
        with self._cond:
            self._cancel_deny_timer()
            if duration is None:
                self._deny_until = math.inf
            else:
                self._deny_until = time.monotonic() + duration
                self._deny_timer = threading.Timer(duration, self._deny_window_ended)
                self._deny_timer.daemon = True
                self._deny_timer.start()
            _log.info("denying identities %s", "until allowed" if duration is None else f"for {duration}s")
            self._cond.notify_all()

    def allow(self) -> None:
        """End the PermissionDenied window now."""
        with self._cond:
            self._cancel_deny_timer()
            self._deny_until = None
            _log.info("identities allowed again")
            self._cond.notify_all()

    def _cancel_deny_timer(self) -> None:
        if self._deny_timer is not None:
            self._deny_timer.cancel()
            self._deny_timer = None

    def _deny_window_ended(self) -> None:
        with self._cond:
            _log.info("permission-denied window ended")
            self._cond.notify_all()

    @property
    def denied(self) -> bool:
        """True while callers get PermissionDenied (window active or no identities)."""
        with self._cond:
            return self._denied_now()

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

    def _broadcast(self, rpcs: Iterable[Rpc]) -> None:
        """Queue a full-state push on every open stream of ``rpcs`` (caller holds the lock)."""
        wanted = set(rpcs)
        for stream in self._streams.values():
            if stream.rpc in wanted and (not stream.outbox or stream.outbox[-1] is not Signal.STATE):
                stream.outbox.append(Signal.STATE)
        self._cond.notify_all()

    def _denied_now(self) -> bool:
        if not self._identities:
            return True
        return self._deny_until is not None and time.monotonic() < self._deny_until

    def _build(self, rpc: Rpc) -> Outgoing:
        if rpc is Rpc.FETCH_X509_SVID:
            feds = ",".join(sorted(self._federated))
            svids = capped(f"{m.spiffe_id} serial={m.serial_number:x}" for m in self._svids)
            return Outgoing(self.x509_svid_response(), f"svids=[{svids}] federated=[{feds}]")
        if rpc is Rpc.FETCH_X509_BUNDLES:
            tds = capped(f"{ca.id} roots={len(ca.roots)}" for ca in self._all_cas())
            return Outgoing(self.x509_bundles_response(), f"bundles=[{tds}]")
        kids = capped(f"{ca.id} kids={[a.kid for a in ca.jwt_authorities]}" for ca in self._all_cas())
        return Outgoing(self.jwt_bundles_response(), f"bundles=[{kids}]")

    # ----- servicer hooks (called from gRPC handler threads) -----
    def _count_call(self, rpc: Rpc) -> None:
        with self._cond:
            self._calls[rpc] += 1
            self._cond.notify_all()

    def _take_error(self, rpc: Rpc) -> InjectedError | None:
        with self._cond:
            errors = self._faults[rpc].errors
            return errors.popleft() if errors else None

    def _take_raw_next(self, rpc: Rpc) -> RawResponse | None:
        with self._cond:
            raws = self._faults[rpc].raw_next
            return raws.popleft() if raws else None

    def _open_stream(self, rpc: Rpc, epoch: int) -> StreamHandle | None:
        """Register a stream; None if its server was stopped (``epoch`` is stale)."""
        with self._cond:
            if epoch != self._epoch:
                return None
            handle = StreamHandle(self._next_stream_id, rpc, epoch)
            self._next_stream_id += 1
            raw = self._take_raw_next(rpc)
            if raw is not None:
                handle.outbox.append(raw)
            handle.outbox.append(Signal.STATE)
            self._streams[handle.id] = handle
            self._opened[rpc] += 1
            self._cond.notify_all()
            return handle

    def _close_stream(self, handle: StreamHandle) -> None:
        with self._cond:
            handle.ended = True
            self._streams.pop(handle.id, None)
            self._cond.notify_all()

    def _unary_handle(self, rpc: Rpc, epoch: int) -> StreamHandle:
        """An unregistered handle so a unary call can wait out hang/delay faults."""
        return StreamHandle(0, rpc, epoch)

    def _await_first(self, handle: StreamHandle) -> bool:
        """Apply hang/delay faults; False if the call ended or the agent stopped meanwhile."""
        with self._cond:
            deadline = time.monotonic() + self._faults[handle.rpc].first_message_delay
            while True:
                if handle.ended or handle.epoch != self._epoch:
                    return False
                remaining = deadline - time.monotonic()
                hanging = self._faults[handle.rpc].hang
                if not hanging and remaining <= 0:
                    return True
                self._cond.wait(remaining if remaining > 0 else None)

    def _next_outgoing(self, handle: StreamHandle) -> Outgoing | Signal:
        """Block until the stream has something to send, must deny, or must end."""
        with self._cond:
            while True:
                if handle.ended or handle.epoch != self._epoch:
                    return Signal.END
                if self._denied_now():
                    return Signal.DENY
                if handle.outbox and not self._faults[handle.rpc].hang:
                    item = handle.outbox.popleft()
                    if item is Signal.STATE:
                        return self._build(handle.rpc)
                    assert not isinstance(item, Signal)
                    return Outgoing(item, f"raw {type(item).__name__} ({_size(item)} bytes)")
                self._cond.wait()

    def _record_sent(self, rpc: Rpc, summary: str, stream_id: int | None = None) -> None:
        with self._cond:
            self._sent[rpc] += 1
            self._cond.notify_all()
        where = f" stream #{stream_id}" if stream_id is not None else ""
        _log.info("pushed %s%s: %s", rpc, where, summary)

    def _close_after_message(self, rpc: Rpc) -> bool:
        with self._cond:
            return self._faults[rpc].close_after_message

    @property
    def _serving_epoch(self) -> int:
        """Bumped by every stop; handlers of an older server must not serve."""
        with self._cond:
            return self._epoch

    def _end_all_streams(self) -> None:
        """Make every current stream handler return (the agent is stopping)."""
        with self._cond:
            self._epoch += 1
            for handle in list(self._streams.values()):
                handle.ended = True
            self._streams.clear()
            self._cond.notify_all()

    def _jwt_svids(self, audience: list[str], spiffe_id: str) -> pb.JWTSVIDResponse:
        """Mint JWT-SVIDs for all identities or the one asked for; LookupError if unknown."""
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


def _size(item: RawResponse) -> int:
    return len(item) if isinstance(item, bytes) else item.ByteSize()
