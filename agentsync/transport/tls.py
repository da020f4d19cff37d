"""Optional TLS for a node's server and client: certificates, mutual TLS and pinning.

A cluster secret already seals ``/v1/sync``; TLS adds confidentiality for
the rest (bearer tokens, ``/v1/state``, health) and identity by
certificate. ``TLSConfig`` is checked when it is made, so a missing file
or a bad pin stops a node before it starts, and builds the two
``ssl.SSLContext`` objects (TLS 1.2 at least).

Pins are checked inside the handshake, by an ``ssl.SSLObject`` subclass
(``SSLContext.sslobject_class``): aiohttp takes either a context or one
``Fingerprint``, never both nor a set, and a check after connecting would
have sent the request already. A peer whose certificate is not pinned
fails the handshake like one whose chain does not verify: nothing is sent.

With ``bind_node_ids``, every node's certificate names its node id in a
subjectAltName URI ``agentsync:node/<id>`` (``node_uri``), and a sync
message is taken only from the node its peer's certificate names: the
server answers any other sender 403, and the client fails an exchange
whose reply names another (``docs/security.md``, "Binding node ids").
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from cryptography import x509

__all__ = ["NODE_URI_PREFIX", "TLSConfig", "certified_node_id", "fingerprint", "node_uri"]

_SHA256_HEX_CHARS = 64

NODE_URI_PREFIX = "agentsync:node/"
"""How a certificate's subjectAltName URI that names a node id begins."""


def node_uri(node_id: str) -> str:
    """The subjectAltName URI that names ``node_id`` in its certificate: ``agentsync:node/<id>``,
    the id percent-encoded (UTF-8; every character but letters, digits and ``-._~``)."""
    if not isinstance(node_id, str) or not node_id:
        raise ValueError("a node id is a non-empty str")
    return NODE_URI_PREFIX + quote(node_id, safe="")


def _named_ids(uris: Iterable[str]) -> set[str]:
    """The node ids that these subjectAltName URIs name (``agentsync:node/<id>``)."""
    ids = set()
    for uri in uris:
        if not uri.startswith(NODE_URI_PREFIX):
            continue
        try:
            node_id = unquote(uri[len(NODE_URI_PREFIX) :], errors="strict")
        except UnicodeDecodeError:  # not UTF-8 once decoded: it names nothing
            continue
        if node_id:
            ids.add(node_id)
    return ids


def certified_node_id(peercert: Any) -> str | None:
    """The node id a verified peer certificate names, or None if it names none or several.

    ``peercert`` is what ``SSLObject.getpeercert()`` returns (the transport's
    ``get_extra_info("peercert")``): a dict once the chain verified, else
    empty or None. Only its subjectAltName URIs count, never the subject's
    commonName.
    """
    if not isinstance(peercert, dict):
        return None
    sans = peercert.get("subjectAltName", ())
    ids = _named_ids(value for kind, value in sans if kind == "URI" and isinstance(value, str))
    return ids.pop() if len(ids) == 1 else None


def fingerprint(cert_file: str | os.PathLike[str]) -> str:
    """The SHA-256 of a PEM certificate's DER form, in lowercase hex: what a pin names."""
    path = os.fspath(cert_file)
    try:
        with open(path, encoding="ascii") as handle:
            der = ssl.PEM_cert_to_DER_cert(handle.read())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read a PEM certificate from {path}: {exc}") from None
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class TLSConfig:
    """A node's TLS settings, checked when made (ValueError or TypeError naming what is wrong).

    ``cert`` and ``key`` are this node's PEM certificate chain and private
    key (``key`` None: the key is in ``cert``); a server needs them, a
    client sends them for mutual TLS. ``ca`` are PEM files of the CAs whose
    certificates are trusted (empty: the system's store). With
    ``require_client_cert`` the server takes only clients with a
    certificate from ``ca``. ``pins`` are SHA-256 fingerprints (hex, colons
    allowed) of the peer certificates accepted on top of that: the server's
    when connecting, and a client's when client certificates are required.
    With ``bind_node_ids`` a peer speaks only as the node id its certificate
    names in a subjectAltName URI ``agentsync:node/<id>`` (``node_uri``):
    it needs ``require_client_cert`` (and so ``ca``) and a ``cert`` naming
    exactly one id, this node's own (the Node checks that it is its id).
    """

    cert: str | None = None
    key: str | None = None
    ca: tuple[str, ...] = ()
    require_client_cert: bool = False
    pins: frozenset[str] = field(default_factory=frozenset)
    check_hostname: bool = True
    bind_node_ids: bool = False

    def __post_init__(self) -> None:
        cert = None if self.cert is None else _readable(self.cert, "certificate")
        key = None if self.key is None else _readable(self.key, "key")
        if key is not None and cert is None:
            raise ValueError("a TLS key was given without its certificate")
        ca = _paths(self.ca)
        for flag in ("require_client_cert", "check_hostname", "bind_node_ids"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool")
        if self.require_client_cert and not ca:
            raise ValueError(
                "require_client_cert needs ca: the CA that signs the clients' certificates"
            )
        object.__setattr__(self, "cert", cert)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "ca", ca)
        object.__setattr__(self, "pins", _pins(self.pins))
        if self.bind_node_ids:
            if not self.require_client_cert:
                raise ValueError(
                    "bind_node_ids needs require_client_cert: a client's node id is read "
                    "from its certificate"
                )
            self.certified_id()  # ValueError unless cert names exactly one

    def certified_id(self) -> str | None:
        """The node id ``cert`` names when node ids are bound (None when they are not).

        ValueError if ``cert`` is missing, no PEM certificate, or names no
        node id or several (subjectAltName URIs ``agentsync:node/<id>``).
        """
        if not self.bind_node_ids:
            return None
        if self.cert is None:
            raise ValueError("bind_node_ids needs cert: the certificate naming this node's id")
        ids = _named_ids(_uris(self.cert))
        if len(ids) != 1:
            found = ", ".join(repr(node_id) for node_id in sorted(ids)) or "none"
            raise ValueError(
                f"with bind_node_ids, the TLS certificate {self.cert} must name exactly one "
                f"node id in a subjectAltName URI {NODE_URI_PREFIX}<id>; it names {found}"
            )
        return ids.pop()

    def server_context(self) -> ssl.SSLContext:
        """The server side: this node's certificate, client certificates if required."""
        if self.cert is None:
            raise ValueError("a TLS server needs a certificate (cert) and its key")
        context = self._context(ssl.PROTOCOL_TLS_SERVER, pinned=self.require_client_cert)
        context.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_NONE
        return context

    def client_context(self) -> ssl.SSLContext:
        """The client side: the server's chain verified (and its pin), this node's cert sent."""
        context = self._context(ssl.PROTOCOL_TLS_CLIENT, pinned=bool(self.pins))
        context.check_hostname = self.check_hostname
        if not self.ca:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return context

    def _context(self, protocol: int, *, pinned: bool) -> ssl.SSLContext:
        context = _PinnedContext(protocol) if pinned and self.pins else ssl.SSLContext(protocol)
        if isinstance(context, _PinnedContext):
            context.pins = self.pins
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        for path in self.ca:
            _trust(context, path)
        if self.cert is not None:
            try:
                context.load_cert_chain(self.cert, self.key)
            except ssl.SSLError as exc:
                key = self.key or self.cert
                raise ValueError(
                    f"the TLS certificate {self.cert} and key {key} do not load as a PEM "
                    f"chain and its unencrypted key: {exc}"
                ) from None
        return context


def _uris(cert_file: str) -> list[str]:
    """The subjectAltName URIs of the first certificate of a PEM file (ValueError if none)."""
    try:
        with open(cert_file, "rb") as handle:
            cert = x509.load_pem_x509_certificate(handle.read())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read a PEM certificate from {cert_file}: {exc}") from None
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return sans.get_values_for_type(x509.UniformResourceIdentifier)


def _trust(context: ssl.SSLContext, path: str) -> None:
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise ValueError(f"the TLS CA file {path} holds no PEM certificate: {exc}") from None


class _PinnedObject(ssl.SSLObject):
    """A TLS connection whose handshake fails unless the peer's certificate is pinned."""

    def do_handshake(self) -> None:
        super().do_handshake()
        context = self.context
        assert isinstance(context, _PinnedContext)
        der = self.getpeercert(binary_form=True)
        digest = hashlib.sha256(der).hexdigest() if der else None
        if digest not in context.pins:
            raise ssl.SSLCertVerificationError(
                f"the peer's certificate (SHA-256 {digest or 'none sent'}) is not pinned"
            )


class _PinnedContext(ssl.SSLContext):
    """An SSLContext whose connections check the peer's certificate against ``pins``."""

    sslobject_class = _PinnedObject
    pins: frozenset[str] = frozenset()


def _readable(path: object, what: str) -> str:
    """``path`` as a str if it names a file this process can read."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"the TLS {what} file must be a path, not {type(path).__name__}")
    name = os.fspath(path)
    if not isinstance(name, str):
        raise TypeError(f"the TLS {what} file must be a str path, not bytes")
    try:
        with open(name, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ValueError(f"cannot read the TLS {what} file {name}: {exc.strerror or exc}") from None
    return name


def _paths(ca: object) -> tuple[str, ...]:
    """The CA files, one path or several, each readable."""
    if isinstance(ca, (str, os.PathLike)):
        ca = (ca,)
    if not isinstance(ca, Iterable):
        raise TypeError(f"ca must be a path or paths, not {type(ca).__name__}")
    return tuple(_readable(path, "CA") for path in ca)


def _pins(pins: object) -> frozenset[str]:
    """The pins as lowercase hex without colons; ValueError naming one that is no SHA-256."""
    if isinstance(pins, str):
        pins = (pins,)
    if not isinstance(pins, Iterable):
        raise TypeError(f"pins must be SHA-256 fingerprints, not {type(pins).__name__}")
    normal = set()
    for pin in pins:
        if not isinstance(pin, str):
            raise TypeError(f"a pin is a hex str, not {type(pin).__name__}")
        digest = pin.replace(":", "").strip().lower()
        if len(digest) != _SHA256_HEX_CHARS or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"pin {pin[:100]!r} is not a SHA-256 fingerprint (64 hex digits)")
        normal.add(digest)
    return frozenset(normal)
