#!/usr/bin/env python3
"""How the simulator copes with a large organization (not part of the pytest suite).

Creates N accounts (default 6,000) in one organization through the simulator,
timing the creations in batches to show whether they slow down as the org
grows, then times the reads and writes Silo makes per account: a full
ListAccounts walk (20 per page), ListAccountsForParent over the root,
ListParents / DescribeAccount / ListTagsForResource for one account,
ListCreateAccountStatus pages filtered on IN_PROGRESS, and MoveAccount.

For each it prints the time the client saw and the time the simulator spent
answering (the `duration` of its request log, /_silo/log), per request.

Run from the repository root, with the simulator's venv:
    ~/.cache/silo/venv/bin/python tests/awssim/scale_check.py [--accounts 6000]
It starts its own simulator on a free port, or uses --url.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any, Callable

import boto3
from botocore.config import Config

HERE = os.path.dirname(os.path.abspath(__file__))
REGION = "us-east-1"


def admin(url: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read())


def server_durations(url: str, since: int) -> tuple[list[float], int]:
    """Durations (seconds) of the requests logged from seq `since` on."""
    out: list[float] = []
    while True:
        page = admin(url, f"/_silo/log?since={since}&limit=10000")
        out += [e["duration"] for e in page["entries"]]
        since = page["next"]
        if not page["more"]:
            return out, since


class Timer:
    """Rows of (what, requests, client ms/request, server ms/request)."""

    def __init__(self, url: str):
        self.url, self.rows = url, []
        self.seq = admin(url, "/_silo/log?since=0&limit=0")["next"]

    def run(self, what: str, fn: Callable[[], int]) -> Any:
        """fn makes some requests and returns how many."""
        start = time.perf_counter()
        n = fn()
        client = time.perf_counter() - start
        durations, self.seq = server_durations(self.url, self.seq)
        self.rows.append((what, n, 1000 * client / max(n, 1),
                          1000 * statistics.fmean(durations) if durations else 0.0,
                          1000 * max(durations, default=0.0)))
        print(f"  {what:<44} {n:>6} req  client {self.rows[-1][2]:8.2f} ms/req  "
              f"server {self.rows[-1][3]:8.2f} ms/req (max {self.rows[-1][4]:.1f})", flush=True)

    def table(self) -> str:
        lines = [f"{'operation':<44} {'requests':>8} {'client ms/req':>14} "
                 f"{'server ms/req':>14} {'server max ms':>14}"]
        lines += [f"{w:<44} {n:>8} {c:>14.2f} {s:>14.2f} {m:>14.1f}"
                  for w, n, c, s, m in self.rows]
        return "\n".join(lines)


def start_simulator() -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "silo_awssim.py"),
                             "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline() if proc.stdout else ""
    m = re.match(r"silo-awssim listening on (\S+)", line)
    if not m:
        proc.kill()
        sys.exit(f"simulator did not start: {line!r}")
    return proc, m.group(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=500, help="creations timed together")
    parser.add_argument("--url", help="use this simulator instead of starting one")
    args = parser.parse_args()
    proc, url = (None, args.url) if args.url else start_simulator()
    try:
        admin(url, "/_silo/reset", {})
        org = boto3.client("organizations", endpoint_url=url, region_name=REGION,
                           aws_access_key_id="testing", aws_secret_access_key="testing",
                           config=Config(retries={"total_max_attempts": 1}))
        org.create_organization(FeatureSet="ALL")
        timer = Timer(url)
        print(f"simulator {url}: creating {args.accounts} accounts")
        ids: list[str] = []
        started = time.perf_counter()

        def create(count: int) -> Callable[[], int]:
            def fn() -> int:
                for _ in range(count):
                    i = len(ids)
                    status = org.create_account(
                        AccountName=f"tenant-{i}", Email=f"tenant-{i}@example.com",
                        Tags=[{"Key": "silo.dev/tenant", "Value": f"tenant-{i}"}],
                    )["CreateAccountStatus"]
                    ids.append(status["AccountId"])
                return count
            return fn

        while len(ids) < args.accounts:
            count = min(args.batch, args.accounts - len(ids))
            timer.run(f"CreateAccount #{len(ids) + 1}-{len(ids) + count}", create(count))
        print(f"created {len(ids)} accounts in {time.perf_counter() - started:.1f} s")

        root = org.list_roots()["Roots"][0]["Id"]
        one = ids[len(ids) // 2]

        def walk(method: str, **kwargs: Any) -> Callable[[], int]:
            def fn() -> int:
                pages = org.get_paginator(method).paginate(
                    PaginationConfig={"PageSize": 20}, **kwargs)
                seen = sum(len(p.get("Accounts", p.get("CreateAccountStatuses", [])))
                           for p in pages)
                fn.seen = seen  # type: ignore[attr-defined]
                return max(1, -(-seen // 20))
            return fn

        listing = walk("list_accounts")
        timer.run("ListAccounts walk (20/page)", listing)
        assert listing.seen == len(ids) + 1, listing.seen  # type: ignore[attr-defined]
        timer.run("ListAccountsForParent walk over the root", walk(
            "list_accounts_for_parent", ParentId=root))

        def repeat(fn: Callable[[], Any], times: int = 50) -> Callable[[], int]:
            def run() -> int:
                for _ in range(times):
                    fn()
                return times
            return run

        timer.run("ListParents (one account)", repeat(lambda: org.list_parents(ChildId=one)))
        timer.run("DescribeAccount (one account)",
                  repeat(lambda: org.describe_account(AccountId=one)))
        timer.run("ListTagsForResource (one account)",
                  repeat(lambda: org.list_tags_for_resource(ResourceId=one)))
        timer.run("ListCreateAccountStatus IN_PROGRESS, 1 page", repeat(
            lambda: org.list_create_account_status(States=["IN_PROGRESS"], MaxResults=20)))
        timer.run("ListCreateAccountStatus SUCCEEDED, 1st page", repeat(
            lambda: org.list_create_account_status(States=["SUCCEEDED"], MaxResults=20)))
        ou = org.create_organizational_unit(ParentId=root, Name="tenants")[
            "OrganizationalUnit"]["Id"]

        def move() -> int:
            for account in ids[:50]:
                org.move_account(AccountId=account, SourceParentId=root, DestinationParentId=ou)
            return 50
        timer.run("MoveAccount", move)
        timer.run("ListChildren (root, ACCOUNT)", repeat(
            lambda: org.list_children(ParentId=root, ChildType="ACCOUNT"), 10))
        print()
        print(timer.table())
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
