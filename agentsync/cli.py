"""The ``agentsync`` command: ``serve``, ``mcp``, ``status``, ``dump`` and ``demo``.

Every error (bad arguments, a bad URL, a peer that does not answer, a port in
use) ends as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO
from urllib.parse import urlsplit

from agentsync import __version__
from agentsync.discovery import MembershipConfig
from agentsync.node import EXCHANGE_TIMEOUT_S
from agentsync.status import clip
from agentsync.store import DURABILITIES, StoreError
from agentsync.sync import PruningConfig

if TYPE_CHECKING:
    from agentsync.node import Node
    from agentsync.transport.client import SyncClient
    from agentsync.transport.tls import TLSConfig

EXIT_ERROR = 2
PRUNE_AFTER = PruningConfig().prune_after
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_TIMEOUT_S = 5.0
MAX_JSON_BYTES = 1 << 30
"""The largest ``/v1/state`` the CLI reads (the state of a big node is big)."""
WATCH_INTERVAL_S = 1.0
"""Seconds between refreshes of ``status --watch`` given no number."""
VALUE_CHARS = 60
"""Values longer than this are cut short in ``status`` tables."""


class CliError(Exception):
    """An error the user can act on: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, not usage plus a line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------------
# Argument types
# ---------------------------------------------------------------------------


def node_url(text: str) -> str:
    """Check a node's base URL, ``http://host:port``; ``host:port`` means http.

    Returns the URL without a trailing slash. Raises ``argparse.ArgumentTypeError``.
    """
    raw = text.strip()
    if raw and "://" not in raw:
        raw = f"http://{raw}"
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad URL {text!r}: {exc}") from None
    if parts.scheme not in {"http", "https"}:
        raise argparse.ArgumentTypeError(f"bad URL {text!r}: the scheme must be http or https")
    if not parts.hostname:
        raise argparse.ArgumentTypeError(f"bad URL {text!r}: no host")
    if port is None:
        raise argparse.ArgumentTypeError(f"bad URL {text!r}: no port")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"bad URL {text!r}: give the node's base URL only")
    return raw.rstrip("/")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not in 0..65535")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"seconds must be > 0, not {text}")
    return value


def _at_least_one(what: str) -> Callable[[str], int]:
    """The argument type of an integer option ``what`` that must be >= 1."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{what} must be >= 1, not {value}")
        return value

    return check


def _read_file(path: str, what: str, limit: int) -> bytes:
    """The bytes of the user's file at ``path`` (``what`` names it in errors).

    CliError if it cannot be read or holds more than ``limit`` bytes: a file
    too large is refused, never cut short.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise CliError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise CliError(f"the {what} {path} is larger than {limit} bytes")
    return data


MAX_SECRET_FILE_BYTES = 64 << 10
"""The largest secret file taken (its secret is at most 1,024 bytes, whitespace left out)."""


def read_secret(path: str) -> bytes | str:
    """The cluster secret in the file at ``path``; CliError if it is missing, bad or too large.

    A file of UTF-8 text is a passphrase, its surrounding whitespace (the
    newline an editor adds) left out; any other file is a bytes secret, as
    it is (``head -c 32 /dev/urandom > F``).
    """
    from agentsync.security import check_secret

    data = _read_file(path, "secret file", MAX_SECRET_FILE_BYTES)
    try:
        secret: bytes | str = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        secret = data
    if not secret:
        raise CliError(f"the secret file {path} is empty")
    try:
        return check_secret(secret)
    except ValueError as exc:
        raise CliError(f"the secret file {path} holds no usable secret: {exc}") from None


MAX_ACL_FILE_BYTES = 1 << 20


def read_acl(path: str) -> dict[str, Any]:
    """The ACL in the JSON file at ``path`` (``Node(acl=...)``'s mapping); CliError if bad.

    The mapping itself is checked by ``Node``, which names the entry at fault.
    """
    data = _read_file(path, "ACL file", MAX_ACL_FILE_BYTES)
    try:
        acl = json.loads(data)
    except ValueError as exc:
        raise CliError(f"the ACL file {path} is not JSON: {_one_line(exc)}") from None
    if not isinstance(acl, dict):
        raise CliError(f'the ACL file {path} must hold an object such as {{"*": {{"write": []}}}}')
    return acl


def _secret_file(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--secret-file",
        metavar="F",
        action="append",
        dest="secret_files",
        help=f"the cluster's shared secret (a passphrase, or a file of random bytes): "
        f"{what}; repeat it while keys rotate: the first seals, every one opens "
        f"(docs/security.md)",
    )


def _tls_options(parser: argparse.ArgumentParser, *, serving: bool) -> None:
    group = parser.add_argument_group("TLS (docs/security.md)")
    mine = "this node's certificate (PEM)" if serving else "a client certificate (PEM)"
    group.add_argument("--tls-cert", metavar="F", help=f"{mine}; with it, the URL is https")
    group.add_argument("--tls-key", metavar="F", help="its private key (default: in --tls-cert)")
    group.add_argument(
        "--tls-ca",
        metavar="F",
        action="append",
        default=[],
        help="a CA (PEM) whose certificates are trusted (default: the system's; repeatable)",
    )
    if serving:
        group.add_argument(
            "--tls-require-client-cert",
            action="store_true",
            help="mutual TLS: take only clients with a certificate from --tls-ca",
        )
        group.add_argument(
            "--tls-bind-node-ids",
            action="store_true",
            help="with --tls-require-client-cert: a peer speaks only as the node id its "
            "certificate names (subjectAltName URI agentsync:node/ID); --id defaults to "
            "this node's certificate's",
        )
    group.add_argument(
        "--tls-pin",
        metavar="SHA256",
        action="append",
        default=[],
        help="accept only a peer certificate with this SHA-256 fingerprint (repeatable)",
    )


def _tls(args: argparse.Namespace) -> TLSConfig | None:
    """The TLS of the ``--tls-*`` options, None without any; CliError if one is bad."""
    require = bool(getattr(args, "tls_require_client_cert", False))
    bind = bool(getattr(args, "tls_bind_node_ids", False))
    if not (args.tls_cert or args.tls_key or args.tls_ca or args.tls_pin or require or bind):
        return None
    from agentsync.transport.tls import TLSConfig

    try:
        return TLSConfig(
            cert=args.tls_cert,
            key=args.tls_key,
            ca=tuple(args.tls_ca),
            require_client_cert=require,
            pins=frozenset(args.tls_pin),
            bind_node_ids=bind,
        )
    except (ValueError, TypeError) as exc:
        raise CliError(_one_line(exc)) from None


def _node_options(parser: argparse.ArgumentParser) -> None:
    """The options of a node that ``serve`` and ``mcp`` run."""
    parser.add_argument("--id", dest="node_id", help="node id (default: a random one)")
    parser.add_argument("--cluster", default="default", help="cluster name (default: default)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, default=0, help="port to bind (default: 0, any free port)"
    )
    parser.add_argument(
        "--peer",
        dest="peers",
        action="append",
        type=node_url,
        default=[],
        metavar="URL",
        help="a peer's URL, http://host:port (repeat for more peers)",
    )
    parser.add_argument(
        "--seed",
        dest="seeds",
        action="append",
        type=node_url,
        default=[],
        metavar="URL",
        help="a node to start from; peers it names are learned too (repeat for more)",
    )
    parser.add_argument(
        "--mdns",
        action="store_true",
        help="find nodes of the same cluster on the LAN over mDNS (bind --host 0.0.0.0)",
    )
    parser.add_argument(
        "--remove-after",
        type=_seconds,
        default=MembershipConfig.remove_after,
        metavar="S",
        help=f"seconds a dead peer is kept and retried before it is forgotten, seeds aside "
        f"(default: {MembershipConfig.remove_after:g})",
    )
    parser.add_argument(
        "--prune-after",
        type=_seconds,
        default=PRUNE_AFTER,
        metavar="S",
        help="seconds the replica of a removed peer is kept before its metadata is pruned; "
        "a peer away longer than --remove-after plus this starts anew when it returns, "
        f"losing its writes no other node had (default: {PRUNE_AFTER:g})",
    )
    parser.add_argument(
        "--data-dir", help="directory for the node's durable state (default: kept in memory)"
    )
    parser.add_argument(
        "--durability",
        choices=DURABILITIES,
        default="full",
        help="with --data-dir: full fsyncs every write and survives power loss; normal "
        "survives a crash of the process (default: full)",
    )
    parser.add_argument(
        "--gossip-interval",
        type=_seconds,
        default=0.2,
        metavar="S",
        help="seconds between gossip rounds (default: 0.2)",
    )
    parser.add_argument(
        "--exchange-timeout",
        type=_seconds,
        default=EXCHANGE_TIMEOUT_S,
        metavar="S",
        help="seconds one exchange may take, connecting included: raise it for a slow or "
        f"distant link (default: {EXCHANGE_TIMEOUT_S:g}, for a LAN)",
    )
    parser.add_argument(
        "--fanout",
        type=_at_least_one("fanout"),
        default=3,
        metavar="N",
        help="peers per round (default: 3)",
    )
    _secret_file(parser, "every exchange is then sealed and authenticated")
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="an observer: pull the peers' state, never send a delta; writes are refused",
    )
    parser.add_argument(
        "--acl",
        metavar="F",
        help="a JSON file of the names each peer may write here and is sent, such as "
        '{"dashboard": {"read": ["pub*"]}, "*": {"write": ["*"]}} (docs/security.md)',
    )
    _tls_options(parser, serving=True)
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="warning",
        help="what the node logs on stderr (default: warning)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="agentsync",
        description="Serverless state sharing for AI and edge agents.",
    )
    parser.add_argument("--version", action="version", version=f"agentsync {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run a node until SIGINT or SIGTERM",
        description=(
            "Run a node: serve its replicas over HTTP and gossip with its peers until "
            "SIGINT or SIGTERM. The first line printed names the node and its URL."
        ),
    )
    _node_options(serve)
    serve.add_argument(
        "--json",
        action="store_true",
        help='print the first line as {"event": "serving", "node_id", "url", "cluster"} '
        'and the last as {"event": "stopped", "node_id"}, for scripts (with --port 0)',
    )
    mcp = commands.add_parser(
        "mcp",
        help="run a node and serve its names to an MCP client on stdin and stdout",
        description=(
            "Run a node, as serve does, and serve MCP tools that read and write its names "
            "on stdin and stdout until the client closes stdin, or SIGINT or SIGTERM; the "
            "node's line goes to stderr (docs/guides/mcp.md). Needs agentsync[mcp]."
        ),
    )
    _node_options(mcp)

    for name, text in (
        ("status", "print a node's health, peers and names as a table"),
        ("dump", "print a node's state (GET /v1/state) as JSON"),
    ):
        sub = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument("url", type=node_url, metavar="URL", help="the node, http://host:port")
        sub.add_argument(
            "--timeout",
            type=_seconds,
            default=DEFAULT_TIMEOUT_S,
            metavar="S",
            help=f"seconds to wait for the node (default: {DEFAULT_TIMEOUT_S:g})",
        )
        _secret_file(sub, "needed to read a node whose cluster has one")
        sub.add_argument(
            "--cluster",
            default="default",
            help="with --secret-file: the node's cluster, which its keys depend on "
            "(default: default)",
        )
        _tls_options(sub, serving=False)
        if name == "status":
            sub.add_argument(
                "--json",
                action="store_true",
                help='print {"health": GET /v1/health, "state": GET /v1/state} as JSON, '
                "for scripts; with --watch, one JSON object of GET /v1/status per refresh",
            )
            sub.add_argument(
                "--watch",
                type=_seconds,
                nargs="?",
                const=WATCH_INTERVAL_S,
                metavar="S",
                help="show each peer's catch-up (dots seen, snapshot pieces) every S seconds "
                f"(default: {WATCH_INTERVAL_S:g}) until Ctrl-C or SIGTERM: progress bars on a "
                "terminal with agentsync[cli] installed, else one line per refresh. A refresh "
                "that fails (node down, timeout, HTTP error) is shown and the watch goes on; "
                "a 401 or 403 (wrong secret or certificate) ends it. Exit code: 0 if the last "
                "refresh succeeded, 2 if it failed",
            )
            sub.add_argument(
                "--count",
                type=_at_least_one("count"),
                metavar="N",
                help="with --watch: stop after N refreshes, failed ones included "
                "(alone, it implies --watch)",
            )

    demo = commands.add_parser(
        "demo",
        help="three agents on loopback write, partition and converge",
        description=(
            "Three agents on loopback write concurrently; one drops off the network and "
            "keeps writing; it comes back and every agent converges."
        ),
    )
    demo.add_argument(
        "--plain",
        action="store_true",
        help="print snapshots as plain text instead of a live view (the default off a TTY)",
    )
    return parser


# ---------------------------------------------------------------------------
# HTTP reads
# ---------------------------------------------------------------------------


async def fetch_json(
    url: str,
    paths: Sequence[str],
    timeout: float,
    token: str | None = None,
    tls: TLSConfig | None = None,
) -> list[Any]:
    """GET each of ``paths`` from the node at ``url``, in turn; their JSON bodies.

    ``token`` is the bearer token of a node whose cluster has a secret,
    ``tls`` the CAs, pins and client certificate to reach an https node.
    Raises ``CliError`` saying what failed (no answer, a timeout, an HTTP
    error, a body that is not JSON or is larger than ``MAX_JSON_BYTES``).
    One client for this call: a watch keeps one of its own (``json_client``).
    """
    from agentsync.errors import PeerUnavailableError

    client = json_client(url, timeout, tls)
    await client.start()
    try:
        return [await client.get_json(url, path, token=token) for path in paths]
    except PeerUnavailableError as exc:
        raise CliError(f"cannot read {_one_line(exc)}") from None
    finally:
        await client.close()


def json_client(url: str, timeout: float, tls: TLSConfig | None) -> SyncClient:
    """A client (not started) for JSON from the node at ``url``; CliError for bad TLS options."""
    from agentsync.transport.client import SyncClient

    if tls is not None and not url.startswith("https://"):
        raise CliError(f"the --tls-* options are for an https:// URL, not {url}")
    try:
        ssl = tls.client_context() if tls is not None else None
    except ValueError as exc:
        raise CliError(_one_line(exc)) from None
    return SyncClient(timeout=timeout, max_body_bytes=MAX_JSON_BYTES, ssl=ssl)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def short_value(value: object, limit: int = VALUE_CHARS) -> str:
    """A value as compact JSON (keys sorted), cut to ``limit`` characters."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))
    return clip(text, limit)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Left-aligned columns, two spaces apart; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths[:-1], strict=False)]
        return (indent + "  ".join([*padded, cells[-1]])).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def _seconds_text(seconds: object) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def format_status(health: Mapping[str, Any], state: Mapping[str, Any]) -> str:
    """The ``status`` report: a node's health, its peers and its names."""
    lines = [
        f"node      {health.get('node_id')}",
        f"cluster   {health.get('cluster')}",
        f"url       {health.get('url')}",
        f"version   agentsync {health.get('version')}, protocol {health.get('protocol')}",
        f"uptime    {_seconds_text(health.get('uptime_s'))}",
        "",
    ]
    peers = health.get("peers") or []
    lines.append(f"peers ({len(peers)})")
    if peers:
        rows = []
        for peer in sorted(peers, key=lambda p: str(p.get("url"))):
            last_ok = peer.get("last_ok_s_ago")
            rows.append(
                [
                    str(peer.get("url")),
                    str(peer.get("node_id") or "?"),
                    str(peer.get("state") or "?"),
                    str(peer.get("failures", 0)),
                    "never" if last_ok is None else f"{_seconds_text(last_ok)} ago",
                    _catch_up_text(peer.get("catch_up")),
                ]
            )
        lines.extend(table(["URL", "NODE", "STATE", "FAILURES", "LAST OK", "CATCH-UP"], rows))
    else:
        lines.append("  (none)")
    lines.append("")
    names: Mapping[str, Any] = state.get("names") or {}
    lines.append(f"names ({len(names)})")
    if names:
        rows = [
            [name, str(entry.get("type")), short_value(entry.get("value"))]
            for name, entry in sorted(names.items())
        ]
        lines.extend(table(["NAME", "TYPE", "VALUE"], rows))
    else:
        lines.append("  (none)")
    return "\n".join(lines)


def _catch_up_text(progress: object) -> str:
    """A snapshot transfer's progress, e.g. ``receiving 3/10`` (pieces), or ``-``."""
    if not isinstance(progress, Mapping):
        return "-"
    parts = []
    for way in ("receiving", "sending"):
        done = progress.get(way)
        if isinstance(done, (list, tuple)) and len(done) == 2:
            parts.append(f"{way} {done[0]}/{done[1]}")
    return ", ".join(parts) or "-"


def format_dump(state: object) -> str:
    """``/v1/state`` as pretty JSON with a stable key order."""
    return json.dumps(state, indent=2, sort_keys=True, ensure_ascii=False)


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def _token(args: argparse.Namespace) -> str | None:
    """The bearer token of the first ``--secret-file`` in ``--cluster``, or None without one."""
    secrets = _secrets(args)
    if not secrets:
        return None
    from agentsync.security import derive

    return derive(secrets[0], args.cluster).token


def _secrets(args: argparse.Namespace) -> list[bytes | str]:
    """The secrets of every ``--secret-file``, in order (each file checked, CliError if bad)."""
    return [read_secret(path) for path in args.secret_files or ()]


async def _status(
    url: str, timeout: float, token: str | None, tls: TLSConfig | None, as_json: bool = False
) -> str:
    health, state = await fetch_json(url, ["/v1/health", "/v1/state"], timeout, token, tls)
    if not isinstance(health, dict) or not isinstance(state, dict):
        raise CliError(f"{url} answered JSON that is not a node's health and state")
    return (
        format_dump({"health": health, "state": state}) if as_json else format_status(health, state)
    )


REFUSED = frozenset({401, 403})
"""HTTP statuses that end a watch at once: the secret, token or certificate is wrong."""


async def _watch(args: argparse.Namespace, out: TextIO) -> int:
    from agentsync.errors import PeerUnavailableError
    from agentsync.transport.wire import STATUS_PATH
    from agentsync.watch import RefreshError, watch

    token, tls = _token(args), _tls(args)
    client = json_client(args.url, args.timeout, tls)  # one session for every refresh

    async def fetch() -> dict[str, Any]:
        try:
            status = await client.get_json(args.url, STATUS_PATH, token=token)
        except PeerUnavailableError as exc:
            if exc.status in REFUSED:  # no retry helps: the watcher's options must change
                raise CliError(f"cannot read {_one_line(exc)}") from None
            raise RefreshError(f"cannot read {_one_line(exc)}") from None
        if not isinstance(status, dict):
            raise RefreshError(f"{args.url} answered JSON that is not a node's status")
        return status

    await client.start()
    try:
        with stop_on_signals() as stopping:
            interval = args.watch or WATCH_INTERVAL_S
            shown = await watch(fetch, out, stopping, interval, count=args.count, as_json=args.json)
            return 0 if shown else EXIT_ERROR
    finally:
        await client.close()


async def _dump(url: str, timeout: float, token: str | None, tls: TLSConfig | None) -> str:
    [state] = await fetch_json(url, ["/v1/state"], timeout, token, tls)
    return format_dump(state)


async def serve(args: argparse.Namespace, out: TextIO) -> int:
    """Run a node until SIGINT or SIGTERM, then stop it cleanly."""
    return await _run_node(args, out, lambda node: asyncio.Event().wait())


async def mcp(args: argparse.Namespace) -> int:
    """Run a node and its MCP tools on stdio until the client leaves or a signal comes."""
    try:
        from agentsync.adapters.mcp import serve_stdio
    except ImportError as exc:
        raise CliError(_one_line(exc)) from None
    served = False

    async def work(node: Node) -> None:
        nonlocal served
        await serve_stdio(node)
        served = True

    code = await _run_node(args, sys.stderr, work)  # stdout carries the protocol
    if not served:  # a signal: the SDK's stdin reader blocks in a thread no cancel ends
        sys.stderr.flush()
        os._exit(code)  # the node has stopped cleanly; only that thread is left
    return code


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event that SIGINT and SIGTERM set, so that a command ends cleanly (exit code 0)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stopping.set)
    try:
        yield stopping
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


async def _run_node(
    args: argparse.Namespace, out: TextIO, work: Callable[[Node], Awaitable[object]]
) -> int:
    """Start the node of the options, run ``work(node)`` until it ends or SIGINT or
    SIGTERM comes, then stop the node cleanly; ``out`` gets its first and last line."""
    from agentsync.node import Node

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    secrets = _secrets(args)
    secret, installed = (secrets[0], secrets[1:]) if secrets else (None, [])
    tls = _tls(args)
    acl = read_acl(args.acl) if args.acl is not None else None
    with stop_on_signals() as stopping:
        try:
            node = Node(
                args.node_id,
                cluster=args.cluster,
                host=args.host,
                port=args.port,
                peers=args.peers,
                seeds=args.seeds,
                discovery=args.mdns,
                gossip_interval=args.gossip_interval,
                fanout=args.fanout,
                exchange_timeout=args.exchange_timeout,
                data_dir=args.data_dir,
                durability=args.durability,
                membership=MembershipConfig(remove_after=args.remove_after),
                pruning=PruningConfig(prune_after=args.prune_after),
                secret=secret,
                tls=tls,
                read_only=args.read_only,
                acl=acl,
            )
            if node.keyring is not None:  # a rotation under way: these open what peers seal
                for other in installed:
                    node.keyring.install(other)
        except (ValueError, TypeError, StoreError) as exc:
            raise CliError(_one_line(exc)) from None
        try:
            await node.start()
        except OSError as exc:
            reason = exc.strerror or _one_line(exc)
            if exc.filename is not None:  # the data directory, not the socket
                raise CliError(f"cannot use {exc.filename}: {reason}") from None
            where = f"{args.host}:{args.port}"
            raise CliError(f"cannot serve on {where}: {reason}") from None
        as_json = getattr(args, "json", False)  # mcp has no --json
        try:
            print(
                json.dumps(
                    {
                        "event": "serving",
                        "node_id": node.node_id,
                        "url": node.url,
                        "cluster": args.cluster,
                    }
                )
                if as_json
                else f"agentsync node {node.node_id} serving {node.url} (cluster {args.cluster})",
                file=out,
                flush=True,
            )
            working = asyncio.ensure_future(work(node))
            signalled = asyncio.ensure_future(stopping.wait())
            await asyncio.wait((working, signalled), return_when=asyncio.FIRST_COMPLETED)
            for task in (working, signalled):
                task.cancel()
            if working.done():
                working.result()  # its error, if it failed
        finally:
            await node.stop()
        print(
            json.dumps({"event": "stopped", "node_id": node.node_id})
            if as_json
            else f"agentsync node {node.node_id} stopped",
            file=out,
            flush=True,
        )
        return 0


def _run(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "serve":
        return asyncio.run(serve(args, out))
    if args.command == "mcp":
        return asyncio.run(mcp(args))
    if args.command == "status" and (args.watch or args.count):
        return asyncio.run(_watch(args, out))
    if args.command == "status":
        status = _status(args.url, args.timeout, _token(args), _tls(args), args.json)
        print(asyncio.run(status), file=out)
        return 0
    if args.command == "dump":
        print(asyncio.run(_dump(args.url, args.timeout, _token(args), _tls(args))), file=out)
        return 0
    if args.command == "demo":
        from agentsync.demo import run

        return 0 if run(out, live=False if args.plain else None) else 1
    raise CliError(f"unknown command {args.command!r}")  # pragma: no cover  # argparse first


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (2 for errors, never a traceback)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _run(args, sys.stdout)
    except CliError as exc:
        print(f"agentsync {args.command}: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"agentsync {args.command}: interrupted", file=sys.stderr)
    except Exception as exc:  # the promise is one line, never a traceback
        if os.environ.get("AGENTSYNC_TRACEBACK"):
            raise
        print(
            f"agentsync {args.command}: error: {type(exc).__name__}: {_one_line(exc)}"
            " (set AGENTSYNC_TRACEBACK=1 for the traceback)",
            file=sys.stderr,
        )
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
