"""The HTTP session connectors talk to providers with: the environment's proxy and CA settings read once per host."""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import requests

__all__ = ["ProviderSession"]


class ProviderSession(requests.Session):
    """requests' Session that reads the environment once per scheme and host instead of on every request.

    A plain Session looks up the proxy variables (HTTPS_PROXY, NO_PROXY, ...), the CA bundle
    variables and ~/.netrc for every request: a twentieth of a national worker's CPU (issue 19).
    Here the proxies for a host (NO_PROXY honoured) and the CA bundle are read at its first request
    and kept for the session's life. ~/.netrc is not read: connectors send their own Authorization
    header, which a .netrc entry for the provider's host would otherwise replace.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        self._environment: dict[str, tuple[dict[str, str], str | None]] = {}

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        parts = urlsplit(url if isinstance(url, str) else url.decode())
        origin = f"{parts.scheme}://{parts.netloc}"
        found = self._environment.get(origin)
        if found is None:
            # A race between two threads reads the same environment twice: harmless.
            found = self._environment[origin] = (
                requests.utils.get_environ_proxies(origin),
                os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE"),
            )
        proxies, bundle = found
        if proxies and kwargs.get("proxies") is None:
            kwargs["proxies"] = proxies
        # As requests does: the bundle applies where verification is on and no other bundle was given.
        if bundle and kwargs.get("verify") in (None, True) and self.verify is True:
            kwargs["verify"] = bundle
        return super().request(method, url, *args, **kwargs)
