"""Locust users for bench/pages.py --load: signed-in school, trust, LA and support staff, and product API clients.

Not run on its own: bench/pages.py writes the accounts to a JSON file named by BENCH_PAGES_ACCOUNTS and
starts `locust -f bench/pages_locust.py --headless`. Each simulated user takes the next account, signs in
through the real forms (CSRF token, password, then a TOTP code for support staff) or holds a product API
token, then opens its pages in random order with a think time of 0.5–2 s, as a person clicking does.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import re

import pyotp
from locust import HttpUser, between, task

ACCOUNTS = json.loads(open(os.environ["BENCH_PAGES_ACCOUNTS"]).read())
_next = itertools.cycle(range(len(ACCOUNTS["users"])))
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


class PortalUser(HttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.account = ACCOUNTS["users"][next(_next)]
        self.headers = {}
        if self.account.get("token"):
            self.headers = {"Authorization": f"Bearer {self.account['token']}"}
            return
        self._form("/login", {"email": self.account["email"], "password": ACCOUNTS["password"]}, "sign in")
        if self.account.get("totp"):
            self._form("/login/totp", {"code": pyotp.TOTP(self.account["totp"]).now()}, "second factor")

    def _form(self, url: str, data: dict, name: str) -> None:
        page = self.client.get(url, name=f"[{name} form]")
        token = CSRF.search(page.text)
        resp = self.client.post(url, data={**data, "csrf_token": token.group(1) if token else ""}, name=f"[{name}]")
        if "/login" in resp.url and "totp" not in resp.url.split("/login", 1)[1] and name == "sign in":
            resp.failure("still on the sign-in page")

    @task
    def page(self) -> None:
        label, url = random.choice(self.account["pages"])
        with self.client.get(url, name=label, headers=self.headers, catch_response=True, allow_redirects=False) as resp:
            if resp.status_code != 200:
                # Status 0: no answer at all; name the client-side error (reset, refused, timeout).
                error = f" {type(resp.error).__name__}: {str(resp.error)[:120]}" if resp.error else ""
                resp.failure(f"HTTP {resp.status_code}{error}")
