"""The live status page (``GET /``): one static HTML file, and the headers it goes out with.

The page holds no data, so anyone may load it: its script fetches
``/v1/status`` (with the bearer token it keeps in the tab's sessionStorage,
when the cluster has a secret) and polls it once a second, one request at
a time, paused while the tab is hidden. Its Content-Security-Policy lets
only its own inline script and style run (by hash) and only same-origin
fetches, so a value from the state that somehow got in as HTML would still
run nothing. Why polling and a header token: ``docs/security.md``, "The
status page".
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

PAGE = files(__package__).joinpath("status.html").read_bytes()
"""The page: inline CSS and script, no other resource."""


def _inline_hash(tag: str) -> str:
    """The CSP source that allows the page's one inline ``tag`` element, by its hash."""
    found = re.search(rb"<%s>(.*?)</%s>" % (tag.encode(), tag.encode()), PAGE, re.DOTALL)
    assert found is not None, f"status.html has no <{tag}>"
    digest = base64.b64encode(hashlib.sha256(found.group(1)).digest()).decode()
    return f"'sha256-{digest}'"


CSP = (
    f"default-src 'none'; script-src {_inline_hash('script')}; style-src {_inline_hash('style')}; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
"""The page's headers: its policy, no sniffing, no referrer, revalidated on each load."""
