"""Several test hosts on one machine: Linux network namespaces joined by bridges.

Each host is a namespace of its own; each bridge lives in a namespace of its
own too, so the machine's interfaces are never touched, and every name
carries a prefix unique to the run. Host ``i`` (1-based) has an interface
``eth<b>`` on each bridge ``b`` it joins, with the addresses
``10.77.<net+b>.<i>/24`` and ``fd77:<net>:<b>::<i>/64`` (the /24s are picked
per run too) and an IPv6 link-local address. A router host, if asked for,
joins every bridge and forwards between them, and every other host routes
through it: hosts on different bridges can reach each other, as subnets of
one site can, while link-local multicast (mDNS) stays on its own bridge, as
routers never forward it.

Use the ``netns_hosts`` fixture (import it into the test module), or
``make_hosts`` as a context manager after ``require_netns()``. Processes
started with ``Hosts.run`` are killed (SIGTERM, then SIGKILL) and the
namespaces deleted on the way out, whatever the test did. Where namespaces
cannot be made the tests skip, saying why, unless ``CI`` is set: there a
missing namespace is a failure, not a skip.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from typing import IO, Any

import pytest

TERM_TIMEOUT = 3.0
"""Seconds a process gets to exit after SIGTERM before it is sent SIGKILL."""
_IP_TIMEOUT = 10.0


def _ip(*args: str) -> None:
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def _sysctl(ns: str, *settings: str) -> None:
    _ip("netns", "exec", ns, "sysctl", "-q", "-w", *settings)


def netns_list() -> list[str]:
    """The names of the network namespaces that exist now."""
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=_IP_TIMEOUT, check=True
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@cache
def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux, not {sys.platform}"
    if shutil.which("ip") is None:
        return "the ip binary (iproute2) is not installed"
    if shutil.which("sysctl") is None:
        return "the sysctl binary (procps) is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    probe = f"asprobe{os.getpid()}{secrets.token_hex(2)}"
    try:
        _ip("netns", "add", probe)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return f"ip netns add does not work here: {exc}"
    with contextlib.suppress(OSError, RuntimeError, subprocess.SubprocessError):
        _ip("netns", "del", probe)
    return None


def require_netns() -> None:
    """Skip the test when namespaces are unavailable; fail it instead when ``CI`` is set."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so network namespace tests must run: {reason}")
    print(f"skipping a network namespace test: {reason}")
    pytest.skip(reason)


class Hosts:
    """K hosts in namespaces, on one or more bridges; see the module docstring."""

    def __init__(self, per_bridge: Sequence[int], *, router: bool) -> None:
        if not per_bridge or min(per_bridge) < 0 or len(per_bridge) > 4:
            raise ValueError("hosts need 1 to 4 bridges of 0 or more hosts each")
        self.prefix = f"as{os.getpid():x}{secrets.token_hex(3)}"
        self.net = secrets.randbelow(60) * 4
        """The third octet of bridge 0's /24; bridge b has ``net + b``."""
        self._bridges: dict[int, tuple[int, ...]] = {}
        i = 0
        for bridge, count in enumerate(per_bridge):
            for _ in range(count):
                i += 1
                self._bridges[i] = (bridge,)
        self.router: int | None = None
        """The host on every bridge (the last one), if one was asked for."""
        if router:
            self.router = i + 1
            self._bridges[self.router] = tuple(range(len(per_bridge)))
        self.count = len(self._bridges)
        self.bridge_count = len(per_bridge)
        self.term_timeout = TERM_TIMEOUT
        """Seconds processes get between SIGTERM and SIGKILL at teardown."""
        self._made: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []

    def ns(self, i: int) -> str:
        """The namespace of host ``i``."""
        self._check(i)
        return f"{self.prefix}-{i}"

    def bridges(self, i: int) -> tuple[int, ...]:
        """The bridges host ``i`` is on."""
        self._check(i)
        return self._bridges[i]

    def hosts_on(self, bridge: int) -> list[int]:
        """The hosts on ``bridge``, the router included."""
        return [i for i, bridges in self._bridges.items() if bridge in bridges]

    def addr(self, i: int, bridge: int | None = None) -> str:
        """Host ``i``'s IPv4 address on ``bridge`` (by default its first)."""
        return f"10.77.{self.net + self._bridge(i, bridge)}.{i}"

    def addr6(self, i: int, bridge: int | None = None) -> str:
        """Host ``i``'s unique local IPv6 address on ``bridge`` (by default its first)."""
        return ipaddress.IPv6Address(f"fd77:{self.net:x}:{self._bridge(i, bridge)}::{i}").compressed

    def run(self, i: int, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in host ``i``'s namespace; it is killed at teardown."""
        popen_kwargs.setdefault("start_new_session", True)  # killed as a group
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(i), *argv], **popen_kwargs)
        self._procs.append(proc)
        return proc

    def cut(self, i: int, bridge: int | None = None) -> None:
        """Set host ``i``'s link to ``bridge`` down (all its links by default)."""
        self._link(i, bridge, "down")

    def heal(self, i: int, bridge: int | None = None) -> None:
        """Set host ``i``'s link to ``bridge`` up again (all its links by default)."""
        self._link(i, bridge, "up")

    def kill_all(self, timeout: float | None = None) -> None:
        """SIGTERM every process started here, then SIGKILL what has not exited by ``timeout``.

        The timeout is ``term_timeout`` by default.

        Signals go to each process's group (its pid, as it started a session)
        only while the process is not reaped, so that the id is still ours.
        """
        procs, self._procs = self._procs, []
        live = [proc for proc in procs if proc.returncode is None]
        for proc in live:
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + (self.term_timeout if timeout is None else timeout)
        while not all(_exited(proc) for proc in live) and time.monotonic() < deadline:
            time.sleep(0.02)
        for proc in live:
            if proc.returncode is None:
                _signal(proc, signal.SIGKILL)  # also what it left behind in its group
            proc.wait()

    def build(self) -> None:
        """Make the namespaces, bridges and links."""
        for bridge in range(self.bridge_count):
            ns = self._add_ns(f"{self.prefix}-br{bridge}")
            _sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
            _ip("-n", ns, "link", "add", "br0", "type", "bridge")
            _ip("-n", ns, "link", "set", "br0", "up")
        for i, bridges in self._bridges.items():
            ns = self._add_ns(self.ns(i))
            forward = "1" if i == self.router else "0"
            _sysctl(
                ns,
                f"net.ipv4.ip_forward={forward}",
                f"net.ipv6.conf.all.forwarding={forward}",
                "net.ipv6.conf.default.accept_dad=0",  # addresses usable at once
            )
            _ip("-n", ns, "link", "set", "lo", "up")
            for bridge in bridges:
                dev, port, bridge_ns = f"eth{bridge}", f"h{i}", f"{self.prefix}-br{bridge}"
                _ip(
                    "link",
                    "add",
                    dev,
                    "netns",
                    ns,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    port,
                    "netns",
                    bridge_ns,
                )
                _ip("-n", bridge_ns, "link", "set", port, "master", "br0", "up")
                _ip("-n", ns, "addr", "add", f"{self.addr(i, bridge)}/24", "dev", dev)
                _ip("-n", ns, "addr", "add", f"{self.addr6(i, bridge)}/64", "dev", dev, "nodad")
                _ip("-n", ns, "link", "set", dev, "up")
        if self.router is not None:
            for i, (bridge, *_) in self._bridges.items():
                if i != self.router:
                    via, via6 = self.addr(self.router, bridge), self.addr6(self.router, bridge)
                    _ip("-n", self.ns(i), "route", "add", "default", "via", via)
                    _ip("-n", self.ns(i), "-6", "route", "add", "default", "via", via6)

    def close(self) -> None:
        """Kill every process started here and delete every namespace made."""
        try:
            self.kill_all()
        finally:
            made, self._made = self._made, []
            for ns in reversed(made):
                with contextlib.suppress(OSError, RuntimeError, subprocess.SubprocessError):
                    _ip("netns", "del", ns)

    def _add_ns(self, ns: str) -> str:
        _ip("netns", "add", ns)
        self._made.append(ns)
        return ns

    def _check(self, i: int) -> None:
        if i not in self._bridges:
            raise IndexError(f"there is no host {i} (hosts are 1 to {self.count})")

    def _bridge(self, i: int, bridge: int | None) -> int:
        bridges = self.bridges(i)
        if bridge is None:
            return bridges[0]
        if bridge not in bridges:
            raise ValueError(f"host {i} is not on bridge {bridge}")
        return bridge

    def _link(self, i: int, bridge: int | None, state: str) -> None:
        for b in self.bridges(i) if bridge is None else (self._bridge(i, bridge),):
            _ip("-n", self.ns(i), "link", "set", f"eth{b}", state)


def _signal(proc: subprocess.Popen[Any], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)  # start_new_session: the group id is the pid


def _exited(proc: subprocess.Popen[Any]) -> bool:
    """Whether ``proc`` has exited, without reaping it (its pid stays taken)."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


@contextlib.contextmanager
def make_hosts(*per_bridge: int, router: bool = False) -> Iterator[Hosts]:
    """Hosts on ``len(per_bridge)`` bridges (``per_bridge[b]`` on bridge b), and a router.

    ``make_hosts(3)`` is three hosts on one bridge; ``make_hosts(2, 2,
    router=True)`` is hosts 1-2 on bridge 0, 3-4 on bridge 1 and host 5 on
    both. Everything is torn down on exit, however the block exits.
    """
    hosts = Hosts(per_bridge, router=router)
    try:
        hosts.build()
        yield hosts
    finally:
        hosts.close()


@pytest.fixture
def netns_hosts() -> Iterator[Callable[..., Hosts]]:
    """A ``make_hosts``-like factory; skips (or fails under CI) without namespaces."""
    require_netns()
    with contextlib.ExitStack() as stack:

        def make(*per_bridge: int, router: bool = False) -> Hosts:
            return stack.enter_context(make_hosts(*per_bridge, router=router))

        yield make


class Lines:
    """The lines a stream yields, gathered by a thread so that tests can poll them."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def __call__(self) -> list[str]:
        """The lines read so far."""
        with self._lock:
            return list(self._lines)

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._lock:
                self._lines.append(line.rstrip("\n"))


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
