"""Tests for silo_awssim: every fault and quota, driven through boto3.

Run from the repository root:  python -m pytest -q tests/awssim
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

HERE = os.path.dirname(os.path.abspath(__file__))
SIMULATOR = os.path.join(HERE, "silo_awssim.py")
REGION = "us-east-1"
# botocore's retries["max_attempts"] counts retries *after* the first attempt
# (max_attempts=1 means two requests); total_max_attempts counts all attempts.
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})
ONE_RETRY = Config(retries={"total_max_attempts": 2, "mode": "standard"})
ROLE = "OrganizationAccountAccessRole"
MANAGEMENT = "123456789012"     # moto's management account: the one "testing" acts in



def template(suffix: str) -> str:
    """A stack with an SNS topic and an SSM parameter named after `suffix`."""
    return json.dumps({
        "Resources": {
            "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": f"t-{suffix}"}},
            "Param": {"Type": "AWS::SSM::Parameter",
                      "Properties": {"Name": f"/silo/{suffix}", "Type": "String",
                                     "Value": "v"}},
        },
        "Outputs": {"TopicArn": {"Value": {"Ref": "Topic"}}},
    })


# ---- fixtures -------------------------------------------------------------

class Sim:
    """A running simulator: its URL, admin API and boto3 clients."""

    def __init__(self, url: str):
        self.url = url

    def admin(self, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data,
                                     method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def configure(self, **config: Any) -> None:
        status, body = self.admin("/_silo/config", config)
        assert status == 200, body

    def stats(self) -> dict[str, Any]:
        return self.admin("/_silo/stats")[1]

    def client(self, service: str, creds: dict[str, str] | None = None,
               config: Config = NO_RETRIES) -> Any:
        creds = creds or {"aws_access_key_id": "testing",
                          "aws_secret_access_key": "testing"}
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            config=config, **creds)


@pytest.fixture(scope="module")
def sim_server():
    """Start the simulator on a free loopback port (--port 0); fail loudly if it can't."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION=REGION)
    env.pop("AWS_ENDPOINT_URL", None)
    stderr = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, SIMULATOR, "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=stderr, env=env, text=True)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=90)
    match = re.match(r"silo-awssim listening on (http://127\.0\.0\.1:\d+)$",
                     line[0].strip() if line else "")
    if not match:
        proc.kill()
        proc.wait()
        stderr.seek(0)
        pytest.fail(f"simulator did not start (exit {proc.returncode}, stdout {line!r}):\n"
                    f"{stderr.read().decode(errors='replace')}", pytrace=False)
    yield Sim(match.group(1))
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=20) == 0, "simulator did not exit cleanly on SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr.close()


# The simulator is as strict as AWS by default (test_defaults_are_as_strict_as_aws).
# Most tests here check one behaviour at a time, so the `sim` fixture turns off the
# defaults that would get in its way: no waits, no request rates, no account or
# closure quota. A test of one of these behaviours turns it back on itself; `strict_sim`
# is the simulator exactly as a reset leaves it.
LENIENT = {
    "create_account_delay_seconds": 0,
    "list_accounts_lag_seconds": 0,
    "unassumable_roles_seconds": 0,
    "stack_operation_seconds": 0,
    "close_pending_seconds": 0,
    "rate_limits": {},
    "account_limit": None,
    "close_quota": None,
}


@pytest.fixture
def strict_sim(sim_server: Sim) -> Sim:
    status, body = sim_server.admin("/_silo/reset", {})
    assert (status, body) == (200, {"ok": True})
    return sim_server


@pytest.fixture
def sim(strict_sim: Sim) -> Sim:
    strict_sim.configure(**LENIENT)
    return strict_sim


@pytest.fixture
def org(sim: Sim) -> Any:
    client = sim.client("organizations")
    client.create_organization(FeatureSet="ALL")
    return client


def create_account(org: Any, name: str, email: str | None = None) -> str:
    resp = org.create_account(AccountName=name, Email=email or f"{name}@example.com")
    return resp["CreateAccountStatus"]["Id"]


def wait_status(org: Any, request_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = org.describe_create_account_status(
            CreateAccountRequestId=request_id)["CreateAccountStatus"]
        if status["State"] != "IN_PROGRESS" or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def new_account(org: Any, name: str) -> str:
    status = wait_status(org, create_account(org, name))
    assert status["State"] == "SUCCEEDED", status
    return status["AccountId"]


def error_code(excinfo: pytest.ExceptionInfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def http_status(excinfo: pytest.ExceptionInfo) -> int:
    return excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


def assume(sim: Sim, account_id: str) -> dict[str, str]:
    creds = sim.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/{ROLE}",
        RoleSessionName="silo")["Credentials"]
    return {"aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"]}


def account_ids(org: Any) -> set[str]:
    return {a["Id"] for a in org.list_accounts()["Accounts"]}


def listings(org: Any) -> list[set[str]]:
    """Account ids from ListAccounts, ListAccountsForParent and ListChildren(root)."""
    root = org.list_roots()["Roots"][0]["Id"]
    return [account_ids(org),
            {a["Id"] for a in org.list_accounts_for_parent(ParentId=root)["Accounts"]},
            {c["Id"] for c in org.list_children(ParentId=root, ChildType="ACCOUNT")["Children"]}]


def all_create_statuses(org: Any, page_size: int, **kwargs: Any) -> list[list[dict[str, Any]]]:
    """ListCreateAccountStatus page by page."""
    pages = org.get_paginator("list_create_account_status").paginate(
        PaginationConfig={"PageSize": page_size}, **kwargs)
    return [page["CreateAccountStatuses"] for page in pages]


def tags_of(org: Any, resource_id: str) -> dict[str, str]:
    return {t["Key"]: t["Value"]
            for t in org.list_tags_for_resource(ResourceId=resource_id)["Tags"]}


# ---- admin API ------------------------------------------------------------

def test_admin_api(sim: Sim) -> None:
    assert sim.admin("/_silo/health") == (200, {"ok": True})
    status, body = sim.admin("/_silo/config", {"no_such_key": 1})
    assert status == 400 and "no_such_key" in body["error"]
    assert sim.admin("/_silo/config", {"throttle_rate": 2})[0] == 400
    assert sim.admin("/_silo/config", {"failing_stacks": {"(": "x"}})[0] == 400
    sim.configure(throttle_rate=0.5, rate_limits={"*": 3})
    sim.configure(close_quota=2)
    config = sim.admin("/_silo/config")[1]
    assert config["throttle_rate"] == 0.5 and config["close_quota"] == 2
    assert config["rate_limits"] == {"*": 3} and config["unique_emails"] is True
    sim.admin("/_silo/reset", {})
    assert sim.admin("/_silo/config")[1]["throttle_rate"] == 0.0
    assert sim.stats()["requests"] == {}


def test_admin_api_delay_lag_and_response_keys(sim: Sim) -> None:
    for bad in ({"create_account_delays": {"(": 1}}, {"create_account_delays": {"a": -1}},
                {"create_account_delays": ["a"]}, {"list_accounts_lag_seconds": -1},
                {"list_accounts_lag_seconds": "3"}, {"response_delays_ms": {"*": "5"}},
                {"response_delays_ms": {"*": True}}):
        status, body = sim.admin("/_silo/config", bad)
        assert status == 400 and next(iter(bad)) in body["error"], (bad, body)
    sim.configure(create_account_delays={"slow": 30, "fast": 1}, list_accounts_lag_seconds=2,
                  response_delays_ms={"organizations:CreateAccount": 500})
    config = sim.admin("/_silo/config")[1]
    assert list(config["create_account_delays"].items()) == [("slow", 30), ("fast", 1)]
    assert config["list_accounts_lag_seconds"] == 2
    assert config["response_delays_ms"] == {"organizations:CreateAccount": 500}
    sim.admin("/_silo/reset", {})
    config = sim.admin("/_silo/config")[1]
    assert config["create_account_delays"] == {} and config["response_delays_ms"] == {}
    assert config["list_accounts_lag_seconds"] == 2, "reset restores the strict default"
    stats = sim.stats()
    assert stats["answered"] == {} and stats["response_delayed"] == {}
    assert stats["accounts_unlisted"] == []


def test_moto_api_reset_also_resets_layer(sim: Sim, org: Any) -> None:
    sim.configure(error_rate=0.25)
    assert sim.stats()["requests"]["organizations:CreateOrganization"] == 1
    with urllib.request.urlopen(urllib.request.Request(
            sim.url + "/moto-api/reset", data=b"", method="POST"), timeout=30) as resp:
        assert resp.status == 200
    assert sim.admin("/_silo/config")[1]["error_rate"] == 0.0
    assert sim.stats()["requests"] == {}
    with pytest.raises(ClientError) as exc:
        org.describe_organization()
    assert error_code(exc) == "AWSOrganizationsNotInUseException"


# ---- Organizations: CreateAccount ------------------------------------------

def test_create_account_delay_then_succeeded(sim: Sim, org: Any) -> None:
    sim.configure(create_account_delay_seconds=1.5)
    request_id = create_account(org, "tenant-a")
    status = org.describe_create_account_status(CreateAccountRequestId=request_id)
    status = status["CreateAccountStatus"]
    assert status["State"] == "IN_PROGRESS" and "AccountId" not in status
    listed = org.list_create_account_status(States=["IN_PROGRESS"])["CreateAccountStatuses"]
    assert [s["Id"] for s in listed] == [request_id]

    [pending] = sim.stats()["accounts_pending"]
    root = org.list_roots()["Roots"][0]["Id"]
    assert pending not in account_ids(org) and len(account_ids(org)) == 1
    assert pending not in {a["Id"] for a in org.list_accounts_for_parent(ParentId=root)["Accounts"]}
    children = org.list_children(ParentId=root, ChildType="ACCOUNT")["Children"]
    assert pending not in {c["Id"] for c in children}
    with pytest.raises(ClientError) as exc:
        org.describe_account(AccountId=pending)
    assert error_code(exc) == "AccountNotFoundException"

    status = wait_status(org, request_id)
    assert status["State"] == "SUCCEEDED" and status["AccountId"] == pending
    assert status["CompletedTimestamp"] >= status["RequestedTimestamp"]
    assert pending in account_ids(org)
    assert org.describe_account(AccountId=pending)["Account"]["Status"] == "ACTIVE"
    children = org.list_children(ParentId=root, ChildType="ACCOUNT")["Children"]
    assert pending in {c["Id"] for c in children}
    assert sim.stats()["accounts_created"] == 1


def test_create_account_without_delay_is_immediate(sim: Sim, org: Any) -> None:
    status = org.create_account(AccountName="t", Email="t@example.com")["CreateAccountStatus"]
    assert status["State"] == "SUCCEEDED" and status["AccountId"] in account_ids(org)
    with pytest.raises(ClientError) as exc:
        org.describe_create_account_status(CreateAccountRequestId="car-0123456789")
    assert error_code(exc) == "CreateAccountStatusNotFoundException"


def test_duplicate_email_fails(sim: Sim, org: Any) -> None:
    sim.configure(create_account_delay_seconds=1)
    first = create_account(org, "one", "Tenant@Example.com")
    dup = org.create_account(AccountName="two", Email="tenant@example.COM")["CreateAccountStatus"]
    assert dup["State"] == "IN_PROGRESS" and dup["Id"] != first
    assert re.fullmatch(r"car-[a-z0-9]{8,32}", dup["Id"])
    status = org.describe_create_account_status(CreateAccountRequestId=dup["Id"])
    assert status["CreateAccountStatus"]["State"] == "IN_PROGRESS"
    status = wait_status(org, dup["Id"])
    assert status["State"] == "FAILED" and status["FailureReason"] == "EMAIL_ALREADY_EXISTS"
    assert "AccountId" not in status
    assert wait_status(org, first)["State"] == "SUCCEEDED"
    failed = org.list_create_account_status(States=["FAILED"])["CreateAccountStatuses"]
    assert [s["Id"] for s in failed] == [dup["Id"]]
    assert len(account_ids(org)) == 2
    # The management account's email is taken too.
    master_email = org.describe_organization()["Organization"]["MasterAccountEmail"]
    status = wait_status(org, create_account(org, "three", master_email))
    assert status["FailureReason"] == "EMAIL_ALREADY_EXISTS"
    sim.configure(unique_emails=False)
    assert wait_status(org, create_account(org, "four", "TENANT@example.com"))["State"] == "SUCCEEDED"


def test_an_email_stays_taken_after_its_account_is_closed_or_removed(sim: Sim, org: Any) -> None:
    closed, removed = new_account(org, "closed"), new_account(org, "removed")
    org.close_account(AccountId=closed)
    org.remove_account_from_organization(AccountId=removed)
    assert removed not in account_ids(org)
    for name in ("closed", "removed"):
        status = wait_status(org, create_account(org, f"{name}-again", f"{name}@example.com"))
        assert status["FailureReason"] == "EMAIL_ALREADY_EXISTS", (name, status)
    sim.configure(unique_emails=False)
    assert wait_status(org, create_account(org, "again", "removed@example.com"))["State"] == "SUCCEEDED"


def test_injected_create_account_failures(sim: Sim, org: Any) -> None:
    for bad in ([{"email": "x"}], [{"reason": ""}], [{"reason": "X", "email": "("}],
                [{"reason": "X", "times": 1.5}], [{"reason": "X", "other": 1}], {"reason": "X"}):
        status, body = sim.admin("/_silo/config", {"create_account_failures": bad})
        assert status == 400 and "create_account_failures" in body["error"], (bad, body)
    sim.configure(create_account_delay_seconds=0.5, create_account_failures=[
        {"reason": "CONCURRENT_ACCOUNT_MODIFICATION", "email": "^busy@", "times": 1},
        {"reason": "INTERNAL_FAILURE", "times": 2}])
    busy = org.create_account(AccountName="busy", Email="busy@example.com")["CreateAccountStatus"]
    assert busy["State"] == "IN_PROGRESS", "a failure is only known once the request ends"
    assert wait_status(org, busy["Id"])["FailureReason"] == "CONCURRENT_ACCOUNT_MODIFICATION"
    reasons = [wait_status(org, create_account(org, name)).get("FailureReason")
               for name in ("a", "busy", "b")]
    assert reasons == ["INTERNAL_FAILURE", "INTERNAL_FAILURE", None], "each rule fails its count"
    assert len(account_ids(org)) == 2, "a failed request makes no account"
    assert sim.stats()["create_account_failures"] == {
        "CONCURRENT_ACCOUNT_MODIFICATION": 1, "INTERNAL_FAILURE": 2}


def test_account_limit(sim: Sim, org: Any) -> None:
    sim.configure(account_limit=2)
    assert wait_status(org, create_account(org, "one"))["State"] == "SUCCEEDED"
    status = wait_status(org, create_account(org, "two"))
    assert status["State"] == "FAILED" and status["FailureReason"] == "ACCOUNT_LIMIT_EXCEEDED"
    assert len(account_ids(org)) == 2
    assert sim.stats()["create_account_failures"] == {"ACCOUNT_LIMIT_EXCEEDED": 1}


def test_sixth_concurrent_creation_is_throttled(sim: Sim, org: Any) -> None:
    sim.configure(create_account_delay_seconds=60)
    for i in range(5):
        create_account(org, f"t{i}")
    with pytest.raises(ClientError) as exc:
        create_account(org, "t5")
    assert error_code(exc) == "TooManyRequestsException" and http_status(exc) == 400
    in_progress = org.list_create_account_status(States=["IN_PROGRESS"])
    assert len(in_progress["CreateAccountStatuses"]) == 5
    stats = sim.stats()
    assert stats["accounts_created"] == 5 and len(stats["accounts_pending"]) == 5
    assert stats["throttled"] == {"organizations:CreateAccount": 1}


def test_each_organization_has_its_own_creation_slots_and_closure_quota(sim: Sim, org: Any) -> None:
    # A second organization, under another management account: entered with a role there
    # (trust policies off, so that no IAM set-up is needed in that account).
    sim.configure(enforce_trust_policies=False, create_account_delay_seconds=0)
    creds = sim.client("sts").assume_role(RoleArn="arn:aws:iam::222222222222:role/admin",
                                          RoleSessionName="second")["Credentials"]
    other = sim.client("organizations", creds={
        "aws_access_key_id": creds["AccessKeyId"], "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["SessionToken"]})
    other.create_organization(FeatureSet="ALL")
    assert other.describe_organization()["Organization"]["MasterAccountId"] == "222222222222"
    mine, theirs, another = new_account(org, "mine"), new_account(other, "theirs"), new_account(other, "another")

    sim.configure(create_account_delay_seconds=60)
    for i in range(5):
        create_account(org, f"busy{i}")
    with pytest.raises(ClientError) as exc:
        create_account(org, "busy5")
    assert error_code(exc) == "TooManyRequestsException", "the first organization's five slots are full"
    create_account(other, "elsewhere")           # the second one's are not
    assert len(other.list_create_account_status(States=["IN_PROGRESS"])["CreateAccountStatuses"]) == 1

    sim.configure(close_quota=1, close_quota_window_seconds=600)
    org.close_account(AccountId=mine)
    other.close_account(AccountId=theirs)         # its own quota, untouched by the first's
    with pytest.raises(ClientError) as exc:
        other.close_account(AccountId=another)
    assert exc.value.response["Reason"] == "CLOSE_ACCOUNT_QUOTA_EXCEEDED"


def test_concurrent_creation_limit_holds_under_parallel_calls(sim: Sim, org: Any) -> None:
    sim.configure(create_account_delay_seconds=60, max_concurrent_creations=3)
    clients = [sim.client("organizations") for _ in range(8)]
    outcomes: list[str] = []

    def create(i: int) -> None:
        try:
            create_account(clients[i], f"p{i}")
            outcomes.append("ok")
        except ClientError as err:
            outcomes.append(err.response["Error"]["Code"])

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["TooManyRequestsException"] * 5 + ["ok"] * 3
    assert sim.stats()["accounts_created"] == 3


def test_create_account_delays_per_email(sim: Sim, org: Any) -> None:
    # First matching pattern wins: "fast" (1 s) before "f" (60 s).
    sim.configure(create_account_delay_seconds=60,
                  create_account_delays={r"@slow\.example\.com$": 30, "fast": 1, "f": 60})
    fast = create_account(org, "fast", "tenant@fast.example.com")
    slow = create_account(org, "slow", "tenant@slow.example.com")
    other = create_account(org, "other", "tenant@other.example.com")
    assert wait_status(org, fast)["State"] == "SUCCEEDED"
    for request_id in (slow, other):
        status = org.describe_create_account_status(CreateAccountRequestId=request_id)
        assert status["CreateAccountStatus"]["State"] == "IN_PROGRESS"
    # A synthetic failure (duplicate email) takes the matching delay too.
    dup = create_account(org, "dup", "tenant@fast.example.com")
    status = wait_status(org, dup)
    assert status["State"] == "FAILED" and status["FailureReason"] == "EMAIL_ALREADY_EXISTS"
    assert len(sim.stats()["accounts_pending"]) == 2


def test_list_create_account_status_lists_every_creation(sim: Sim, org: Any) -> None:
    instant = [org.create_account(AccountName=f"i{i}", Email=f"i{i}@example.com")
               ["CreateAccountStatus"] for i in range(3)]
    assert [s["State"] for s in instant] == ["SUCCEEDED"] * 3
    sim.configure(create_account_delay_seconds=60, create_account_delays={"^i0@": 0})
    pending = create_account(org, "p", "p@example.com")
    failed = create_account(org, "dup", "i0@example.com")
    everything = [s for page in all_create_statuses(org, 20) for s in page]
    assert [s["Id"] for s in everything] == [s["Id"] for s in instant] + [pending, failed]
    stamps = [s["RequestedTimestamp"] for s in everything]
    assert stamps == sorted(stamps)

    succeeded = org.list_create_account_status(States=["SUCCEEDED"])["CreateAccountStatuses"]
    assert [(s["Id"], s["AccountId"]) for s in succeeded] == \
        [(s["Id"], s["AccountId"]) for s in instant]
    assert all(s["CompletedTimestamp"] >= s["RequestedTimestamp"] for s in succeeded)
    [in_progress] = org.list_create_account_status(
        States=["IN_PROGRESS"])["CreateAccountStatuses"]
    assert in_progress["Id"] == pending and "AccountId" not in in_progress
    assert "CompletedTimestamp" not in in_progress
    [fail] = org.list_create_account_status(States=["FAILED"])["CreateAccountStatuses"]
    assert (fail["Id"], fail["FailureReason"]) == (failed, "EMAIL_ALREADY_EXISTS")
    assert "AccountId" not in fail

    pages = all_create_statuses(org, 2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [s["Id"] for p in pages for s in p] == [s["Id"] for s in everything]
    pages = all_create_statuses(org, 3, States=["SUCCEEDED", "FAILED"])
    assert [[s["State"] for s in p] for p in pages] == \
        [["SUCCEEDED"] * 3, ["FAILED"]]
    with pytest.raises(ClientError) as exc:
        org.list_create_account_status(NextToken="not-a-token")
    assert error_code(exc) == "InvalidInputException"


# ---- Organizations: tags ---------------------------------------------------

def test_account_tags(sim: Sim, org: Any) -> None:
    status = org.create_account(AccountName="tagged", Email="tagged@example.com", Tags=[
        {"Key": "silo.io/tenant", "Value": "a"}, {"Key": "team", "Value": "x"}],
    )["CreateAccountStatus"]
    account = status["AccountId"]
    assert tags_of(org, account) == {"silo.io/tenant": "a", "team": "x"}
    org.tag_resource(ResourceId=account, Tags=[{"Key": "team", "Value": "y"},
                                                {"Key": "env", "Value": "test"}])
    assert tags_of(org, account) == {"silo.io/tenant": "a", "team": "y", "env": "test"}
    org.untag_resource(ResourceId=account, TagKeys=["team", "absent"])
    assert tags_of(org, account) == {"silo.io/tenant": "a", "env": "test"}
    with pytest.raises(ClientError) as exc:
        org.list_tags_for_resource(ResourceId="111111111111")
    assert error_code(exc) == "TargetNotFoundException"

    # A delayed creation: unknown while IN_PROGRESS, then carries its tags.
    sim.configure(create_account_delay_seconds=1)
    request_id = org.create_account(AccountName="later", Email="later@example.com", Tags=[
        {"Key": "silo.io/tenant", "Value": "b"}])["CreateAccountStatus"]["Id"]
    [pending] = sim.stats()["accounts_pending"]
    with pytest.raises(ClientError) as exc:
        org.list_tags_for_resource(ResourceId=pending)
    assert error_code(exc) == "TargetNotFoundException"
    with pytest.raises(ClientError) as exc:
        org.tag_resource(ResourceId=pending, Tags=[{"Key": "k", "Value": "v"}])
    assert error_code(exc) == "TargetNotFoundException"
    assert wait_status(org, request_id)["AccountId"] == pending
    assert tags_of(org, pending) == {"silo.io/tenant": "b"}
    org.tag_resource(ResourceId=pending, Tags=[{"Key": "k", "Value": "v"}])
    assert tags_of(org, pending) == {"silo.io/tenant": "b", "k": "v"}
    assert tags_of(org, account) == {"silo.io/tenant": "a", "env": "test"}


# ---- Organizations: eventually consistent listings --------------------------

def test_list_accounts_lag(sim: Sim, org: Any) -> None:
    sim.configure(list_accounts_lag_seconds=4, create_account_delays={"^late@": 1})
    master = org.describe_organization()["Organization"]["MasterAccountId"]
    root = org.list_roots()["Roots"][0]["Id"]
    status = org.create_account(AccountName="now", Email="now@example.com")["CreateAccountStatus"]
    assert status["State"] == "SUCCEEDED"
    instant = status["AccountId"]
    late_request = create_account(org, "late", "late@example.com")
    for ids in listings(org):
        assert instant not in ids and master in ids
    # Every call that names the account already sees it.
    assert org.describe_account(AccountId=instant)["Account"]["Status"] == "ACTIVE"
    assert org.list_parents(ChildId=instant)["Parents"] == [{"Id": root, "Type": "ROOT"}]
    assert tags_of(org, instant) == {}
    assert instant in sim.stats()["accounts_unlisted"]

    status = wait_status(org, late_request)
    assert status["State"] == "SUCCEEDED"
    late = status["AccountId"]
    assert org.describe_account(AccountId=late)["Account"]["Status"] == "ACTIVE"
    for ids in listings(org):
        assert late not in ids and master in ids

    deadline = time.monotonic() + 30
    while not {instant, late} <= account_ids(org):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    for ids in listings(org):
        assert ids == {master, instant, late}
    assert sim.stats()["accounts_unlisted"] == []


# ---- rate limits, throttling, errors, latency -------------------------------

def test_rate_limits_most_specific_key_wins(sim: Sim, org: Any) -> None:
    sim.configure(rate_limits={"organizations:DescribeOrganization": 0.1,
                               "organizations:*": 100, "*": 0.1})
    org.describe_organization()
    with pytest.raises(ClientError) as exc:
        org.describe_organization()
    assert error_code(exc) == "TooManyRequestsException"
    for _ in range(3):   # organizations:* (100/s) applies, not "*"
        org.list_roots()
    sts = sim.client("sts")
    sts.get_caller_identity()   # "*" (burst 1)
    with pytest.raises(ClientError) as exc:
        sts.get_caller_identity()
    assert error_code(exc) == "Throttling"
    assert sim.stats()["throttled"] == {"organizations:DescribeOrganization": 1,
                                        "sts:GetCallerIdentity": 1}


def test_throttle_rate_one_throttles_everything(sim: Sim, org: Any) -> None:
    sim.configure(throttle_rate=1.0)
    with pytest.raises(ClientError) as exc:
        org.create_account(AccountName="x", Email="x@example.com")
    assert error_code(exc) == "TooManyRequestsException" and http_status(exc) == 400
    assert "another request is already in progress" in exc.value.response["Error"]["Message"]
    for client, call in ((sim.client("sts"), "get_caller_identity"),
                         (sim.client("cloudformation"), "list_stacks")):
        with pytest.raises(ClientError) as exc:
            getattr(client, call)()
        assert error_code(exc) == "Throttling" and http_status(exc) == 400
        assert exc.value.response["Error"]["Message"] == "Rate exceeded"
    # boto3 classifies them as retryable throttling errors: one retry is spent.
    with pytest.raises(ClientError) as exc:
        sim.client("organizations", config=ONE_RETRY).list_roots()
    assert exc.value.response["ResponseMetadata"]["RetryAttempts"] == 1
    # Throttled requests never reached moto.
    sim.configure(throttle_rate=0.0)
    assert len(account_ids(org)) == 1 and sim.stats()["accounts_created"] == 0


def test_throttle_operations_selects_operations(sim: Sim, org: Any) -> None:
    sim.configure(throttle_rate=1.0, throttle_operations=["sts:GetCallerIdentity"])
    org.list_roots()
    with pytest.raises(ClientError) as exc:
        sim.client("sts").get_caller_identity()
    assert error_code(exc) == "Throttling"


def test_error_rate_one_gives_500s(sim: Sim, org: Any) -> None:
    sim.configure(error_rate=1.0)
    with pytest.raises(ClientError) as exc:
        org.create_account(AccountName="x", Email="x@example.com")
    assert error_code(exc) == "ServiceException" and http_status(exc) == 500
    for client, call in ((sim.client("sts"), "get_caller_identity"),
                         (sim.client("cloudformation"), "list_stacks")):
        with pytest.raises(ClientError) as exc:
            getattr(client, call)()
        assert error_code(exc) == "InternalFailure" and http_status(exc) == 500
    sim.configure(error_rate=1.0, error_operations=["cloudformation:ListStacks"])
    assert len(account_ids(org)) == 1
    stats = sim.stats()
    assert stats["injected_errors"]["organizations:CreateAccount"] == 1
    assert stats["accounts_created"] == 0


def test_latency(sim: Sim, org: Any) -> None:
    sim.configure(latency_ms=300, latency_rate=1.0)
    start = time.monotonic()
    org.list_roots()
    assert time.monotonic() - start >= 0.3
    assert sim.stats()["latency_injected"] == {"organizations:ListRoots": 1}


def test_response_delay_after_processing(sim: Sim, org: Any) -> None:
    sim.configure(response_delays_ms={"organizations:CreateAccount": 3000})
    impatient = sim.client("organizations", config=Config(
        read_timeout=1, retries={"total_max_attempts": 1, "mode": "standard"}))
    with pytest.raises(ReadTimeoutError):
        impatient.create_account(AccountName="lost", Email="lost@example.com")
    # AWS acted although the caller never learned it; other calls are not held up.
    deadline = time.monotonic() + 30
    while sim.stats()["response_delayed"] != {"organizations:CreateAccount": 1}:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    [status] = org.list_create_account_status()["CreateAccountStatuses"]
    assert status["State"] == "SUCCEEDED" and status["AccountName"] == "lost"
    assert status["AccountId"] in account_ids(org)

    sim.configure(response_delays_ms={"organizations:*": 1000, "organizations:ListRoots": 0,
                                      "*": 0})
    start = time.monotonic()
    org.describe_organization()
    assert time.monotonic() - start >= 1.0
    org.list_roots()
    sim.client("sts").get_caller_identity()
    # Injected faults never reached moto: nothing to hold back.
    sim.configure(throttle_rate=1.0, response_delays_ms={"*": 1000})
    with pytest.raises(ClientError) as exc:
        org.list_roots()
    assert error_code(exc) == "TooManyRequestsException"
    assert sim.stats()["response_delayed"] == {"organizations:CreateAccount": 1,
                                               "organizations:DescribeOrganization": 1}


def test_answered_stats(sim: Sim, org: Any) -> None:
    with pytest.raises(ClientError) as exc:
        org.describe_account(AccountId="111111111111")
    assert error_code(exc) == "AccountNotFoundException"   # a real answer
    sim.configure(max_concurrent_creations=0)
    with pytest.raises(ClientError) as exc:
        create_account(org, "x")
    assert error_code(exc) == "TooManyRequestsException"
    sim.configure(throttle_rate=1.0, throttle_operations=["organizations:ListRoots"],
                  error_rate=1.0, error_operations=["sts:GetCallerIdentity"])
    with pytest.raises(ClientError):
        org.list_roots()
    with pytest.raises(ClientError):
        sim.client("sts").get_caller_identity()
    sim.configure(throttle_rate=0.0, rate_limits={"organizations:ListRoots": 0.1})
    org.list_roots()
    with pytest.raises(ClientError):
        org.list_roots()
    stats = sim.stats()
    assert stats["answered"] == {"organizations:CreateOrganization": 1,
                                 "organizations:DescribeAccount": 1,
                                 "organizations:ListRoots": 1}
    assert stats["requests"] == {"organizations:CreateOrganization": 1,
                                 "organizations:DescribeAccount": 1,
                                 "organizations:CreateAccount": 1,
                                 "organizations:ListRoots": 3,
                                 "sts:GetCallerIdentity": 1}


# ---- Organizations: CloseAccount -------------------------------------------

def test_close_goes_through_pending_closure(sim: Sim, org: Any) -> None:
    account = new_account(org, "closing")
    sim.configure(close_pending_seconds=1.5)
    org.close_account(AccountId=account)
    assert org.describe_account(AccountId=account)["Account"]["Status"] == "PENDING_CLOSURE"
    listed = {a["Id"]: a for a in org.list_accounts()["Accounts"]}
    assert listed[account]["Status"] == listed[account]["State"] == "PENDING_CLOSURE"
    with pytest.raises(ClientError) as exc:
        org.close_account(AccountId=account)
    assert error_code(exc) == "AccountAlreadyClosedException"
    deadline = time.monotonic() + 30
    while org.describe_account(AccountId=account)["Account"]["Status"] == "PENDING_CLOSURE":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    described = org.describe_account(AccountId=account)["Account"]
    assert described["Status"] == described["State"] == "SUSPENDED"
    with pytest.raises(ClientError) as exc:
        org.close_account(AccountId=account)
    assert error_code(exc) == "AccountAlreadyClosedException"


def test_close_quota(sim: Sim, org: Any) -> None:
    first, second = new_account(org, "c1"), new_account(org, "c2")
    sim.configure(close_quota=1, close_quota_window_seconds=2)
    org.close_account(AccountId=first)
    with pytest.raises(ClientError) as exc:
        org.close_account(AccountId=second)
    assert error_code(exc) == "ConstraintViolationException" and http_status(exc) == 400
    assert exc.value.response["Reason"] == "CLOSE_ACCOUNT_QUOTA_EXCEEDED"
    assert org.describe_account(AccountId=second)["Account"]["Status"] == "ACTIVE"
    assert org.describe_account(AccountId=first)["Account"]["Status"] == "SUSPENDED"
    time.sleep(2.1)   # the window rolls past the first closure
    org.close_account(AccountId=second)


def test_aws_close_quota_is_a_share_of_the_members_with_a_floor(sim: Sim, org: Any) -> None:
    members = [new_account(org, f"m{i}") for i in range(11)]
    sim.configure(close_quota="aws")           # 10% of 11 members is 1: the floor of 10 holds
    for account in members[:10]:
        org.close_account(AccountId=account)
    with pytest.raises(ClientError) as exc:
        org.close_account(AccountId=members[10])
    assert exc.value.response["Reason"] == "CLOSE_ACCOUNT_QUOTA_EXCEEDED"
    assert sim.admin("/_silo/config", {"close_quota": "some"})[0] == 400


def test_a_suspended_account_is_closed_for_good_after_the_post_closure_period(
        sim: Sim, org: Any) -> None:
    sim.configure(close_pending_seconds=0.5, closed_after_seconds=0.5, account_limit=3)
    account = new_account(org, "leaving")
    new_account(org, "staying")
    org.close_account(AccountId=account)
    described = org.describe_account(AccountId=account)["Account"]
    assert described["State"] == described["Status"] == "PENDING_CLOSURE"
    status = wait_status(org, create_account(org, "full"))
    assert status["FailureReason"] == "ACCOUNT_LIMIT_EXCEEDED", "a closed account still counts"
    time.sleep(0.6)
    described = org.describe_account(AccountId=account)["Account"]
    assert described["State"] == described["Status"] == "SUSPENDED"
    time.sleep(0.6)
    described = org.describe_account(AccountId=account)["Account"]
    assert (described["State"], described["Status"]) == ("CLOSED", "SUSPENDED")
    assert wait_status(org, create_account(org, "room"))["State"] == "SUCCEEDED", \
        "a permanently closed account no longer counts against the account quota"


# ---- CloudFormation ------------------------------------------------------------

def test_failing_stack(sim: Sim) -> None:
    reason = "Resource handler returned message: \"quota exceeded\""
    sim.configure(failing_stacks={"^tenant-.*-fail$": reason}, stack_failure_seconds=1)
    cfn, sns, ssm = (sim.client(s) for s in ("cloudformation", "sns", "ssm"))
    stack_id = cfn.create_stack(StackName="tenant-a-fail", TemplateBody=template("a"))["StackId"]
    assert re.fullmatch(r"arn:aws:cloudformation:us-east-1:123456789012:stack/tenant-a-fail/.+",
                        stack_id)
    stack = cfn.describe_stacks(StackName="tenant-a-fail")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_FAILED"
    assert "Topic" in stack["StackStatusReason"] and "Outputs" not in stack
    events = cfn.describe_stack_events(StackName="tenant-a-fail")["StackEvents"]
    failed = [e for e in events if e["ResourceStatus"] == "CREATE_FAILED"
              and e["ResourceType"] != "AWS::CloudFormation::Stack"]
    assert [(e["LogicalResourceId"], e["ResourceType"], e["ResourceStatusReason"])
            for e in failed] == [("Topic", "AWS::SNS::Topic", reason)]
    assert not any(e["ResourceStatus"] == "CREATE_COMPLETE" for e in events)
    # Nothing the stack made remains.
    assert sns.list_topics()["Topics"] == []
    assert ssm.describe_parameters()["Parameters"] == []
    assert cfn.describe_stack_resources(StackName="tenant-a-fail")["StackResources"] == []

    deadline = time.monotonic() + 30
    while cfn.describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"] == "CREATE_FAILED":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert cfn.describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"] == "ROLLBACK_COMPLETE"
    events = cfn.describe_stack_events(StackName=stack_id)["StackEvents"]
    assert events[0]["ResourceStatus"] == "ROLLBACK_COMPLETE"
    assert events[0]["ResourceType"] == "AWS::CloudFormation::Stack"
    assert any(e.get("ResourceStatusReason") == reason for e in events)
    assert sns.list_topics()["Topics"] == []
    cfn.delete_stack(StackName="tenant-a-fail")

    # A stack that does not match is created normally.
    cfn.create_stack(StackName="tenant-b", TemplateBody=template("b"))
    assert cfn.describe_stacks(StackName="tenant-b")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    assert len(sns.list_topics()["Topics"]) == 1
    assert sim.stats()["stacks_failed"] == 1


# ---- STS -------------------------------------------------------------------------

def test_unassumable_role_then_assumable(sim: Sim, org: Any) -> None:
    sim.configure(unassumable_roles_seconds=1.5)
    account = new_account(org, "fresh")
    sts = sim.client("sts")
    role_arn = f"arn:aws:iam::{account}:role/{ROLE}"
    with pytest.raises(ClientError) as exc:
        sts.assume_role(RoleArn=role_arn, RoleSessionName="silo")
    assert error_code(exc) == "AccessDenied" and http_status(exc) == 403
    assert f"sts:AssumeRole on resource: {role_arn}" in exc.value.response["Error"]["Message"]
    # The management account's own roles are not affected.
    sim.client("iam").create_role(RoleName="admin", AssumeRolePolicyDocument=trust(MANAGEMENT))
    sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/admin", RoleSessionName="other")
    deadline = time.monotonic() + 30
    while True:
        try:
            creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="silo")["Credentials"]
            break
        except ClientError as err:
            assert err.response["Error"]["Code"] == "AccessDenied"
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert creds["AccessKeyId"]
    assert sim.stats()["assume_role_denied"] >= 1


def test_assumed_role_acts_in_member_account(sim: Sim, org: Any) -> None:
    account = new_account(org, "member")
    creds = assume(sim, account)
    assert sim.client("sts", creds).get_caller_identity()["Account"] == account
    member_cfn = sim.client("cloudformation", creds)
    stack_id = member_cfn.create_stack(StackName="tenant-member",
                                       TemplateBody=template("member"))["StackId"]
    assert stack_id.split(":")[4] == account
    stacks = member_cfn.describe_stacks()["Stacks"]
    assert [s["StackName"] for s in stacks] == ["tenant-member"]
    topic = sim.client("sns", creds).list_topics()["Topics"][0]["TopicArn"]
    assert topic.split(":")[4] == account
    management_cfn = sim.client("cloudformation")
    assert management_cfn.describe_stacks()["Stacks"] == []
    with pytest.raises(ClientError) as exc:
        management_cfn.describe_stacks(StackName="tenant-member")
    assert error_code(exc) == "ValidationError"
    assert sim.client("sns").list_topics()["Topics"] == []
    # Failing stacks fail in member accounts too.
    sim.configure(failing_stacks={"member-fail": "boom"})
    member_cfn.create_stack(StackName="member-fail", TemplateBody=template("fail"))
    stack = member_cfn.describe_stacks(StackName="member-fail")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_FAILED"
    assert len(sim.client("sns", creds).list_topics()["Topics"]) == 1   # tenant-member's


def test_writes_are_counted_by_the_role_session_that_made_them(sim: Sim, org: Any) -> None:
    account = new_account(org, "session-writer")
    role_arn = f"arn:aws:iam::{account}:role/{ROLE}"
    for name in ["replica-a", "replica-b"]:
        creds = sim.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=name)["Credentials"]
        cfn = sim.client("cloudformation", {"aws_access_key_id": creds["AccessKeyId"],
                                            "aws_secret_access_key": creds["SecretAccessKey"],
                                            "aws_session_token": creds["SessionToken"]})
        cfn.create_stack(StackName=f"by-{name}", TemplateBody=template(name))
        cfn.describe_stacks()
    by_session = sim.stats()["writes_by_session"]
    assert by_session["replica-a"] == {"cloudformation:CreateStack": 1}
    assert by_session["replica-b"] == {"cloudformation:CreateStack": 1}


def trust(*principals: str, external_id: str | None = None, like: bool = False) -> str:
    """A trust policy letting `principals` (account ids or ARNs) sts:AssumeRole,
    with the external id (StringEquals, or StringLike) when given."""
    statement: dict[str, Any] = {"Effect": "Allow", "Action": "sts:AssumeRole",
                                 "Principal": {"AWS": list(principals)}}
    if external_id is not None:
        operator = "StringLike" if like else "StringEquals"
        statement["Condition"] = {operator: {"sts:ExternalId": external_id}}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def assume_denied(sts: Any, role_arn: str, action: str = "sts:AssumeRole", **kwargs: Any) -> str:
    """AssumeRole is refused as AWS refuses it, for want of `action`; returns the message."""
    with pytest.raises(ClientError) as exc:
        sts.assume_role(RoleArn=role_arn, RoleSessionName="silo", **kwargs)
    assert error_code(exc) == "AccessDenied" and http_status(exc) == 403
    message = exc.value.response["Error"]["Message"]
    assert message.endswith(f"is not authorized to perform: {action} on resource: {role_arn}")
    return message


def test_assume_role_needs_a_role_that_exists(sim: Sim, org: Any) -> None:
    sts = sim.client("sts")
    missing = f"arn:aws:iam::{MANAGEMENT}:role/silo-management"
    message = assume_denied(sts, missing)
    assert message.startswith(f"User: arn:aws:iam::{MANAGEMENT}:user/moto is not authorized")
    member = new_account(org, "member")
    assume_denied(sts, f"arn:aws:iam::{member}:role/NoSuchRole")
    assume_denied(sts, "arn:aws:iam::999999999999:role/OrganizationAccountAccessRole")
    assume_denied(sts, "arn:aws:iam::not-an-account:role/x")
    # A role in the management account that trusts it: the management account's own
    # credentials are no role, so Silo's --management-role-arn must be created first.
    sim.client("iam").create_role(RoleName="silo-management",
                                  AssumeRolePolicyDocument=trust(f"arn:aws:iam::{MANAGEMENT}:root"))
    creds = sts.assume_role(RoleArn=missing, RoleSessionName="silo-controller")["Credentials"]
    session = {"aws_access_key_id": creds["AccessKeyId"],
               "aws_secret_access_key": creds["SecretAccessKey"],
               "aws_session_token": creds["SessionToken"]}
    # The session (a principal of the management account) enters the member account.
    assert sim.client("sts", session).assume_role(
        RoleArn=f"arn:aws:iam::{member}:role/{ROLE}", RoleSessionName="silo")["Credentials"]
    # The path is part of a role's ARN.
    sim.client("iam").create_role(RoleName="pathed", Path="/silo/",
                                  AssumeRolePolicyDocument=trust(MANAGEMENT))
    assume_denied(sts, f"arn:aws:iam::{MANAGEMENT}:role/pathed")
    sts.assume_role(RoleArn=f"arn:aws:iam::{MANAGEMENT}:role/silo/pathed", RoleSessionName="pathed")
    stats = sim.stats()
    assert stats["assume_role_denied"] == 5
    denied = [(s["role"], s["denied"]) for s in stats["sessions"]]
    assert denied[0] == (missing, "no such role") and denied[4] == (missing, None)
    assert [d for _, d in denied].count("no such role") == 5


def test_trust_policy_external_id(sim: Sim, org: Any) -> None:
    iam, sts = sim.client("iam"), sim.client("sts")
    iam.create_role(RoleName="guarded",
                    AssumeRolePolicyDocument=trust(MANAGEMENT, external_id="right-id"))
    iam.create_role(RoleName="patterned",
                    AssumeRolePolicyDocument=trust(MANAGEMENT, external_id="tenant-*", like=True))
    guarded = f"arn:aws:iam::{MANAGEMENT}:role/guarded"
    assume_denied(sts, guarded)                          # no external id
    assume_denied(sts, guarded, ExternalId="wrong-id")
    assume_denied(sts, guarded, ExternalId="RIGHT-ID")    # StringEquals is case-sensitive
    assert sts.assume_role(RoleArn=guarded, RoleSessionName="silo",
                           ExternalId="right-id")["Credentials"]["AccessKeyId"]
    patterned = f"arn:aws:iam::{MANAGEMENT}:role/patterned"
    sts.assume_role(RoleArn=patterned, RoleSessionName="silo", ExternalId="tenant-acme")
    assume_denied(sts, patterned, ExternalId="other-acme")
    # OrganizationAccountAccessRole requires none: an external id is simply accepted.
    member = new_account(org, "member")
    sts.assume_role(RoleArn=f"arn:aws:iam::{member}:role/{ROLE}", RoleSessionName="silo",
                    ExternalId="ext-1234")
    # Conditions the simulator cannot evaluate never allow; a Deny it cannot evaluate denies.
    iam.create_role(RoleName="mfa", AssumeRolePolicyDocument=json.dumps({"Statement": [
        {"Effect": "Allow", "Principal": {"AWS": MANAGEMENT}, "Action": "sts:AssumeRole",
         "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}]}))
    assume_denied(sts, f"arn:aws:iam::{MANAGEMENT}:role/mfa")
    iam.create_role(RoleName="denied", AssumeRolePolicyDocument=json.dumps({"Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "sts:*"},
        {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole",
         "Condition": {"StringEquals": {"sts:ExternalId": "banned"}}}]}))
    denied = f"arn:aws:iam::{MANAGEMENT}:role/denied"
    sts.assume_role(RoleArn=denied, RoleSessionName="silo", ExternalId="fine")
    assume_denied(sts, denied, ExternalId="banned")
    sessions = sim.stats()["sessions"]
    assert [(s["external_id"], s["denied"]) for s in sessions[:4]] == [
        (None, "trust policy"), ("wrong-id", "trust policy"), ("RIGHT-ID", "trust policy"),
        ("right-id", None)]


def test_trust_policy_names_the_accounts_it_trusts(sim: Sim, org: Any) -> None:
    a, b, c = (new_account(org, name) for name in ("trusted", "holder", "stranger"))
    # A role in member account B that trusts account A only, and one that trusts a
    # single role of A.
    in_b = sim.client("iam", assume(sim, b))
    in_b.create_role(RoleName="shared", AssumeRolePolicyDocument=trust(f"arn:aws:iam::{a}:root"))
    in_b.create_role(RoleName="narrow",
                     AssumeRolePolicyDocument=trust(f"arn:aws:iam::{a}:role/deployer"))
    shared, narrow = (f"arn:aws:iam::{b}:role/{name}" for name in ("shared", "narrow"))
    from_a, from_c = sim.client("sts", assume(sim, a)), sim.client("sts", assume(sim, c))
    assert from_a.assume_role(RoleArn=shared, RoleSessionName="from-a")["Credentials"]
    message = assume_denied(from_c, shared)
    assert message.startswith(f"User: arn:aws:sts::{c}:assumed-role/{ROLE}/silo is not authorized")
    # The management account is not trusted by B's role either (only A is).
    assume_denied(sim.client("sts"), shared)
    # Only sessions of A's role "deployer" get into "narrow": not another role of A.
    assume_denied(from_a, narrow)
    sim.client("iam", assume(sim, a)).create_role(
        RoleName="deployer", AssumeRolePolicyDocument=trust(MANAGEMENT))
    creds = sim.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{a}:role/deployer", RoleSessionName="deploy")["Credentials"]
    deployer = sim.client("sts", {"aws_access_key_id": creds["AccessKeyId"],
                                  "aws_secret_access_key": creds["SecretAccessKey"],
                                  "aws_session_token": creds["SessionToken"]})
    assert deployer.get_caller_identity()["Account"] == a
    assert deployer.assume_role(RoleArn=narrow, RoleSessionName="narrow")["Credentials"]


def tag_session_denied(sts: Any, role_arn: str, **kwargs: Any) -> None:
    """AssumeRole with session tags is refused for want of sts:TagSession, as AWS words it."""
    assume_denied(sts, role_arn, "sts:TagSession", **kwargs)


def test_session_tags_need_sts_tag_session(sim: Sim, org: Any) -> None:
    sts, iam = sim.client("sts"), sim.client("iam")
    tags = [{"Key": "silo-tenant", "Value": "acme"}]
    # The role CreateAccount makes trusts the management account for sts:AssumeRole only:
    # session tags (or transitive tag keys) are refused, without them it lets the caller in.
    member = new_account(org, "member")
    default = f"arn:aws:iam::{member}:role/{ROLE}"
    tag_session_denied(sts, default, Tags=tags)
    tag_session_denied(sts, default, Tags=tags, TransitiveTagKeys=["silo-tenant"])
    tag_session_denied(sts, default, ExternalId="ext-1234", Tags=tags)
    assert sts.assume_role(RoleArn=default, RoleSessionName="silo")["Credentials"]
    # A role that refuses sts:AssumeRole is refused for that first, tags or not.
    assume_denied(sts, f"arn:aws:iam::{member}:role/NoSuchRole", Tags=tags)
    iam.create_role(RoleName="elsewhere", AssumeRolePolicyDocument=json.dumps({"Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "210987654321"},
         "Action": ["sts:AssumeRole", "sts:TagSession"]}]}))
    assume_denied(sts, f"arn:aws:iam::{MANAGEMENT}:role/elsewhere", Tags=tags)

    # Trust policies that allow sts:TagSession, spelled the ways IAM reads an action.
    def allowing(name: str, action: Any, **extra: Any) -> str:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({"Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{MANAGEMENT}:root"},
             "Action": action, **extra}]}))
        return f"arn:aws:iam::{MANAGEMENT}:role/{name}"

    for name, action in (("listed", ["sts:AssumeRole", "sts:TagSession"]), ("sts-star", "sts:*"),
                         ("star", "*"), ("wildcard", ["sts:AssumeRole", "STS:Tag*"])):
        role_arn = allowing(name, action)
        assert sts.assume_role(RoleArn=role_arn, RoleSessionName="silo", Tags=tags,
                               TransitiveTagKeys=["silo-tenant"])["Credentials"]
    # TagSession in a statement of its own counts; its conditions must hold too.
    iam.create_role(RoleName="split", AssumeRolePolicyDocument=json.dumps({"Statement": [
        {"Effect": "Allow", "Principal": {"AWS": MANAGEMENT}, "Action": "sts:AssumeRole"},
        {"Effect": "Allow", "Principal": {"AWS": MANAGEMENT}, "Action": "sts:TagSession",
         "Condition": {"StringEquals": {"sts:ExternalId": "right-id"}}}]}))
    split = f"arn:aws:iam::{MANAGEMENT}:role/split"
    assert sts.assume_role(RoleArn=split, RoleSessionName="silo")["Credentials"]
    tag_session_denied(sts, split, Tags=tags)
    tag_session_denied(sts, split, Tags=tags, ExternalId="wrong-id")
    assert sts.assume_role(RoleArn=split, RoleSessionName="silo", Tags=tags,
                           ExternalId="right-id")["Credentials"]
    # NotAction that leaves sts:TagSession out does not allow it; a Deny on it wins.
    iam.create_role(RoleName="no-tags", AssumeRolePolicyDocument=json.dumps({"Statement": [
        {"Effect": "Allow", "Principal": {"AWS": MANAGEMENT}, "NotAction": "sts:TagSession"}]}))
    no_tags = f"arn:aws:iam::{MANAGEMENT}:role/no-tags"
    assert sts.assume_role(RoleArn=no_tags, RoleSessionName="silo")["Credentials"]
    tag_session_denied(sts, no_tags, Tags=tags)
    iam.create_role(RoleName="denies", AssumeRolePolicyDocument=json.dumps({"Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "sts:*"},
        {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "sts:TagSession"}]}))
    denies = f"arn:aws:iam::{MANAGEMENT}:role/denies"
    assert sts.assume_role(RoleArn=denies, RoleSessionName="silo")["Credentials"]
    tag_session_denied(sts, denies, Tags=tags)
    # Adding sts:TagSession to the default role lets tagged sessions in.
    in_member = sim.client("iam", assume(sim, member))
    in_member.update_assume_role_policy(RoleName=ROLE, PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{MANAGEMENT}:root"},
         "Action": ["sts:AssumeRole", "sts:TagSession"]}]}))
    assert sts.assume_role(RoleArn=default, RoleSessionName="silo", Tags=tags)["Credentials"]

    stats = sim.stats()
    refusals = [(s["role"], s["tags"], s["denied"]) for s in stats["sessions"] if s["denied"]]
    assert refusals[:3] == [(default, {"silo-tenant": "acme"}, "tag session")] * 3
    assert [d for _, _, d in refusals] == ["tag session"] * 3 + ["no such role", "trust policy"] + \
        ["tag session"] * 4
    assert stats["assume_role_denied"] == len(refusals)
    last = stats["sessions"][-1]
    assert (last["role"], last["tags"], last["denied"]) == (default, {"silo-tenant": "acme"}, None)
    # Without enforcement, tags need nothing.
    sim.configure(enforce_trust_policies=False)
    assert sts.assume_role(RoleArn=split, RoleSessionName="silo", Tags=tags)["Credentials"]


def test_enforce_trust_policies_off_lets_anyone_assume_anything(sim: Sim, org: Any) -> None:
    assert sim.admin("/_silo/config", {"enforce_trust_policies": 1})[0] == 400
    assert sim.admin("/_silo/config")[1]["enforce_trust_policies"] is True
    sim.client("iam").create_role(RoleName="guarded",
                                  AssumeRolePolicyDocument=trust("210987654321", external_id="x"))
    sim.configure(enforce_trust_policies=False)
    sts = sim.client("sts")
    for role_arn in (f"arn:aws:iam::{MANAGEMENT}:role/missing", "arn:aws:iam::999999999999:role/any",
                     f"arn:aws:iam::{MANAGEMENT}:role/guarded"):
        assert sts.assume_role(RoleArn=role_arn, RoleSessionName="silo",
                               ExternalId="wrong")["Credentials"]["AccessKeyId"]
    stats = sim.stats()
    assert stats["assume_role_denied"] == 0
    assert [s["denied"] for s in stats["sessions"]] == [None] * 3
    # The timer still applies with the knob off.
    sim.configure(unassumable_roles_seconds=600)
    assume_denied(sts, f"arn:aws:iam::{new_account(org, 'fresh')}:role/anything")
    assert sim.stats()["sessions"][-1]["denied"] == "unassumable"


def test_create_account_makes_the_role_that_trusts_the_management_account(sim: Sim, org: Any) -> None:
    default = new_account(org, "default")
    resp = org.create_account(AccountName="custom", Email="custom@example.com", RoleName="SiloAdmin")
    custom = wait_status(org, resp["CreateAccountStatus"]["Id"])["AccountId"]
    iam = sim.client("iam", assume(sim, default))
    role = iam.get_role(RoleName=ROLE)["Role"]
    assert role["Arn"] == f"arn:aws:iam::{default}:role/{ROLE}"
    assert role["AssumeRolePolicyDocument"]["Statement"] == [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        "Principal": {"AWS": f"arn:aws:iam::{MANAGEMENT}:root"}}]
    assert iam.list_role_policies(RoleName=ROLE)["PolicyNames"] == ["AdministratorAccess"]
    admin = iam.get_role_policy(RoleName=ROLE, PolicyName="AdministratorAccess")["PolicyDocument"]
    assert admin["Statement"] == [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
    # RoleName names the role instead; no OrganizationAccountAccessRole then.
    sts = sim.client("sts")
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{custom}:role/SiloAdmin",
                            RoleSessionName="silo")["Credentials"]
    in_custom = sim.client("iam", {"aws_access_key_id": creds["AccessKeyId"],
                                   "aws_secret_access_key": creds["SecretAccessKey"],
                                   "aws_session_token": creds["SessionToken"]})
    assert [r["RoleName"] for r in in_custom.list_roles()["Roles"]] == ["SiloAdmin"]
    assume_denied(sts, f"arn:aws:iam::{custom}:role/{ROLE}")
    # A creation that fails makes no account and no role.
    failed = wait_status(org, create_account(org, "again", "default@example.com"))
    assert failed["State"] == "FAILED" and "AccountId" not in failed


# ---- request log and per-caller counters --------------------------------------

def read_log(sim: Sim, since: int = 0, limit: int | None = None) -> dict[str, Any]:
    query = f"?since={since}" + ("" if limit is None else f"&limit={limit}")
    status, body = sim.admin("/_silo/log" + query)
    assert status == 200, body
    return body


def test_request_log(sim: Sim, org: Any) -> None:
    agent = Config(user_agent="silo-test/1.0", retries={"total_max_attempts": 1})
    tagged = sim.client("organizations", config=agent)
    account = new_account(org, "logged")
    tagged.tag_resource(ResourceId=account, Tags=[{"Key": "k", "Value": "v"}])
    with pytest.raises(ClientError):
        tagged.describe_account(AccountId="111111111111")
    sim.configure(throttle_rate=1.0, throttle_operations=["organizations:ListRoots"],
                  error_rate=1.0, error_operations=["sts:GetCallerIdentity"])
    with pytest.raises(ClientError):
        org.list_roots()
    with pytest.raises(ClientError):
        sim.client("sts").get_caller_identity()
    cfn = boto3.client("cloudformation", endpoint_url=sim.url, region_name="eu-west-1",
                       config=NO_RETRIES, aws_access_key_id="AKIDLOG",
                       aws_secret_access_key="x")
    with pytest.raises(ClientError):
        cfn.describe_stacks(StackName="nope")

    log = read_log(sim)
    entries = log["entries"]
    assert [e["seq"] for e in entries] == list(range(len(entries)))
    assert log["next"] == len(entries) and log["more"] is False and log["dropped"] == 0
    assert [e["key"] for e in entries] == [
        "organizations:CreateOrganization", "organizations:CreateAccount",
        "organizations:DescribeCreateAccountStatus", "organizations:TagResource",
        "organizations:DescribeAccount", "organizations:ListRoots",
        "sts:GetCallerIdentity", "cloudformation:DescribeStacks"]
    tag, missing, throttled, failed, stack = entries[3:]
    assert tag["user_agent"].startswith("silo-test/1.0") and tag["account_id"] == account
    assert (tag["status"], tag["outcome"], tag["region"]) == (200, "answered", REGION)
    assert (tag["service"], tag["operation"]) == ("organizations", "TagResource")
    assert tag["caller_account"] == "123456789012" and tag["access_key"] == "testing"
    assert "Boto3" in entries[0]["user_agent"] and "stack_name" not in tag
    assert (missing["status"], missing["outcome"]) == (400, "answered")
    assert (throttled["status"], throttled["outcome"]) == (400, "throttled")
    assert (failed["status"], failed["outcome"]) == (500, "error")
    assert stack["stack_name"] == "nope" and stack["region"] == "eu-west-1"
    assert stack["access_key"] == "AKIDLOG" and stack["status"] == 400
    assert "account_id" not in stack
    now = time.time()
    assert all(now - 60 < e["time"] <= now and e["duration"] >= 0 for e in entries)
    assert [e["time"] for e in entries] == sorted(e["time"] for e in entries)

    # Paging with since/limit; admin calls are not logged.
    page = read_log(sim, since=2, limit=3)
    assert [e["seq"] for e in page["entries"]] == [2, 3, 4]
    assert page["next"] == 5 and page["more"] is True
    assert read_log(sim, since=page["next"])["entries"] == entries[5:]
    assert read_log(sim, since=len(entries)) == {"next": len(entries), "entries": [],
                                                 "more": False, "dropped": 0}
    assert sim.admin("/_silo/log?since=x")[0] == 400
    sim.admin("/_silo/reset", {})
    assert read_log(sim) == {"next": 0, "entries": [], "more": False, "dropped": 0}


def test_request_log_keeps_the_last_entries(sim: Sim) -> None:
    # The bound is LOG_LIMIT (200,000); checked on the layer object itself so the
    # test stays fast.
    sys.path.insert(0, HERE)
    import silo_awssim

    layer = silo_awssim.SiloLayer(lambda environ, start: [])
    assert layer.state.log.maxlen == silo_awssim.LOG_LIMIT == 200_000
    layer.state.log = silo_awssim.collections.deque(maxlen=3)
    env = {"HTTP_AUTHORIZATION":
           "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/sts/aws4_request",
           "HTTP_X_MOTO_ACCOUNT_ID": "123456789012"}
    for _ in range(5):
        call = silo_awssim.Call(env, "sts", "GetCallerIdentity", {}, "query")
        layer.record(call, silo_awssim.Response(200, [], b""), time.time())
    body = json.loads(layer.read_log("since=0").body)
    assert [e["seq"] for e in body["entries"]] == [2, 3, 4]
    assert body["dropped"] == 2 and body["next"] == 5


def test_callers_with_different_access_keys_share_the_management_account(sim: Sim) -> None:
    org = sim.client("organizations")
    org.create_organization(FeatureSet="ALL")
    # Another process, configured only through the environment, with another key.
    script = (
        "import boto3, json\n"
        "org = boto3.client('organizations')\n"
        "made = org.create_account(AccountName='other', Email='other@example.com')\n"
        "account = made['CreateAccountStatus']['AccountId']\n"
        "org.tag_resource(ResourceId=account, Tags=[{'Key': 'by', 'Value': 'testing2'}])\n"
        "master = org.describe_organization()['Organization']['MasterAccountId']\n"
        "print(json.dumps({'master': master,\n"
        "                  'accounts': sorted(a['Id'] for a in org.list_accounts()['Accounts']),\n"
        "                  'me': boto3.client('sts').get_caller_identity()['Account']}))\n")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing2", AWS_SECRET_ACCESS_KEY="testing2",
               AWS_DEFAULT_REGION=REGION, AWS_ENDPOINT_URL=sim.url)
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    other = json.loads(out)
    assert other["master"] == other["me"] == "123456789012"
    assert other["accounts"] == sorted(a["Id"] for a in org.list_accounts()["Accounts"])
    assert len(other["accounts"]) == 2
    new = next(a for a in other["accounts"] if a != "123456789012")
    assert tags_of(org, new) == {"by": "testing2"}
    org.move_account(AccountId=new, SourceParentId=org.list_roots()["Roots"][0]["Id"],
                     DestinationParentId=org.create_organizational_unit(
                         ParentId=org.list_roots()["Roots"][0]["Id"], Name="ou")
                     ["OrganizationalUnit"]["Id"])

    stats = sim.stats()
    assert stats["by_access_key"]["testing2"] == {
        "organizations:CreateAccount": 1, "organizations:TagResource": 1,
        "organizations:DescribeOrganization": 1, "organizations:ListAccounts": 1,
        "sts:GetCallerIdentity": 1}
    assert stats["writes_by_access_key"]["testing2"] == {
        "organizations:CreateAccount": 1, "organizations:TagResource": 1}
    assert stats["by_access_key"]["testing"] == {
        "organizations:CreateOrganization": 1, "organizations:ListAccounts": 1,
        "organizations:ListTagsForResource": 1, "organizations:ListRoots": 2,
        "organizations:CreateOrganizationalUnit": 1, "organizations:MoveAccount": 1}
    assert stats["writes_by_access_key"]["testing"] == {
        "organizations:CreateOrganization": 1, "organizations:CreateOrganizationalUnit": 1,
        "organizations:MoveAccount": 1}
    callers = {(e["access_key"], e["caller_account"]) for e in read_log(sim)["entries"]}
    assert callers == {("testing", "123456789012"), ("testing2", "123456789012")}


def test_rate_limit_scope(sim: Sim, org: Any) -> None:
    member = assume(sim, new_account(org, "scoped"))
    mgmt_east, member_east = sim.client("sts"), sim.client("sts", member)
    mgmt_west = boto3.client("sts", endpoint_url=sim.url, region_name="eu-west-1",
                             config=NO_RETRIES, aws_access_key_id="testing",
                             aws_secret_access_key="testing")

    def outcomes(*clients: Any) -> list[str]:
        out = []
        for client in clients:
            try:
                client.get_caller_identity()
                out.append("ok")
            except ClientError as err:
                out.append(err.response["Error"]["Code"])
        return out

    sim.configure(rate_limits={"sts:GetCallerIdentity": 0.01},   # burst 1, then ~none
                  rate_limit_scope={})                           # every key global
    assert outcomes(mgmt_east, member_east, mgmt_west) == ["ok", "Throttling", "Throttling"]
    sim.configure(rate_limit_scope={"sts:*": "account"})
    assert outcomes(mgmt_east, member_east, mgmt_west, member_east) == \
        ["ok", "ok", "Throttling", "Throttling"]
    sim.configure(rate_limit_scope={"sts:GetCallerIdentity": "account-region",
                                    "*": "global"})
    assert outcomes(mgmt_east, member_east, mgmt_west, mgmt_east, mgmt_west) == \
        ["ok", "ok", "ok", "Throttling", "Throttling"]
    assert sim.admin("/_silo/config", {"rate_limit_scope": {"*": "per-tenant"}})[0] == 400
    assert sim.admin("/_silo/config")[1]["rate_limit_scope"] == {
        "sts:GetCallerIdentity": "account-region", "*": "global"}
    sim.admin("/_silo/reset", {})
    assert sim.admin("/_silo/config")[1]["rate_limit_scope"]["sts:*"] == "account-region"


# ---- CloudFormation: operations over time, failures, change sets ---------------

def revision_template(topics: tuple[str, ...] = ("Topic",), extra: dict[str, Any] | None = None,
                      default: str | None = None) -> str:
    """A stack with SNS topics, an SSM parameter holding the Rev parameter, and
    an output echoing it."""
    rev: dict[str, Any] = {"Type": "String"}
    if default is not None:
        rev["Default"] = default
    resources: dict[str, Any] = {
        name: {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": name.lower()}}
        for name in topics}
    resources["Param"] = {"Type": "AWS::SSM::Parameter",
                          "Properties": {"Name": "/silo/rev", "Type": "String",
                                         "Value": {"Ref": "Rev"}}}
    resources.update(extra or {})
    return json.dumps({"Parameters": {"Rev": rev}, "Resources": resources,
                       "Outputs": {"Rev": {"Value": {"Ref": "Rev"}}}})


def rev_args(rev: str) -> dict[str, Any]:
    return {"Parameters": [{"ParameterKey": "Rev", "ParameterValue": rev}],
            "Tags": [{"Key": "silo.dev/revision", "Value": rev}]}


def stack_of(cfn: Any, name: str) -> dict[str, Any]:
    return cfn.describe_stacks(StackName=name)["Stacks"][0]


def stack_view(cfn: Any, name: str) -> tuple[str, dict[str, str], dict[str, str], dict[str, str]]:
    """(status, tags, parameters, outputs) of a stack."""
    s = stack_of(cfn, name)
    return (s["StackStatus"], {t["Key"]: t["Value"] for t in s.get("Tags", [])},
            {p["ParameterKey"]: p["ParameterValue"] for p in s.get("Parameters", [])},
            {o["OutputKey"]: o["OutputValue"] for o in s.get("Outputs", [])})


def wait_stack(cfn: Any, name: str, leaving: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while (status := stack_of(cfn, name)["StackStatus"]) == leaving:
        assert time.monotonic() < deadline, f"{name} stuck in {leaving}"
        time.sleep(0.1)
    return status


def stack_events(cfn: Any, name: str) -> list[tuple[str, str, str | None]]:
    """(logical id, status, reason), oldest first."""
    return [(e["LogicalResourceId"], e["ResourceStatus"], e.get("ResourceStatusReason"))
            for e in cfn.describe_stack_events(StackName=name)["StackEvents"][::-1]]


def topic_names(sim: Sim, creds: dict[str, str] | None = None) -> set[str]:
    return {t["TopicArn"].rsplit(":", 1)[1]
            for t in sim.client("sns", creds).list_topics()["Topics"]}


def test_drift_made_out_of_band_is_detected_reported_and_reverted(sim: Sim) -> None:
    sim.configure(stack_operation_seconds=0, drift_detection_seconds=0.3)
    cfn = sim.client("cloudformation")
    account = "123456789012"
    cfn.create_stack(StackName="drifty", TemplateBody=revision_template(), **rev_args("1"))
    difference = {"PropertyPath": "/TopicName", "ExpectedValue": "topic", "ActualValue": "renamed",
                  "DifferenceType": "NOT_EQUAL"}
    status, _ = sim.admin("/_silo/drift", {"account": account, "region": REGION, "stack": "drifty",
                                            "resource": "Topic", "differences": [difference]})
    assert status == 200
    detection = cfn.detect_stack_drift(StackName="drifty")["StackDriftDetectionId"]
    assert cfn.describe_stack_drift_detection_status(StackDriftDetectionId=detection)[
        "DetectionStatus"] == "DETECTION_IN_PROGRESS"
    time.sleep(0.4)
    done = cfn.describe_stack_drift_detection_status(StackDriftDetectionId=detection)
    assert (done["DetectionStatus"], done["StackDriftStatus"], done["DriftedStackResourceCount"]) == \
        ("DETECTION_COMPLETE", "DRIFTED", 1)
    drifts = cfn.describe_stack_resource_drifts(
        StackName="drifty", StackResourceDriftStatusFilters=["MODIFIED", "DELETED"])["StackResourceDrifts"]
    assert [(d["LogicalResourceId"], d["ResourceType"], d["StackResourceDriftStatus"]) for d in drifts] == \
        [("Topic", "AWS::SNS::Topic", "MODIFIED")]
    assert drifts[0]["PropertyDifferences"][0]["ActualValue"] == "renamed"
    assert cfn.describe_stack_resource_drifts(StackName="drifty", StackResourceDriftStatusFilters=[
        "DELETED"])["StackResourceDrifts"] == []
    # An update with the same content reverts nothing; a REVERT_DRIFT change set does.
    cfn.create_change_set(StackName="drifty", ChangeSetName="revert", TemplateBody=revision_template(),
                          ChangeSetType="UPDATE", DeploymentMode="REVERT_DRIFT", **rev_args("1"))
    cfn.execute_change_set(StackName="drifty", ChangeSetName="revert")
    wait_stack(cfn, "drifty", "UPDATE_IN_PROGRESS")
    again = cfn.detect_stack_drift(StackName="drifty")["StackDriftDetectionId"]
    time.sleep(0.4)
    assert cfn.describe_stack_drift_detection_status(StackDriftDetectionId=again)[
        "StackDriftStatus"] == "IN_SYNC"
    assert cfn.describe_stack_resource_drifts(StackName="drifty")["StackResourceDrifts"] == []


def test_stack_operation_times_can_be_long_tailed_and_repeat_after_a_reset() -> None:
    sys.path.insert(0, HERE)
    import silo_awssim
    layer = silo_awssim.SiloLayer(lambda environ, start_response: [])
    assert layer.stack_seconds() == silo_awssim.DEFAULT_STACK_OPERATION_SECONDS, "fixed by default"
    layer.state.config.stack_operation_seconds = 3.0
    layer.state.config.stack_operation_p99_seconds = 18.0
    draws = sorted(layer.stack_seconds() for _ in range(4000))
    median, p99 = draws[len(draws) // 2], draws[int(len(draws) * 0.99)]
    assert 2.7 < median < 3.3, median
    assert 15.0 < p99 < 21.0, p99
    assert min(draws) > 0
    layer.state = silo_awssim.State()  # what reset() starts from
    layer.state.config.stack_operation_seconds = 3.0
    layer.state.config.stack_operation_p99_seconds = 18.0
    assert sorted(layer.stack_seconds() for _ in range(4000)) == draws, "the same draws after a reset"


def test_stack_operations_take_time(sim: Sim) -> None:
    sim.configure(stack_operation_seconds=1)
    cfn = sim.client("cloudformation")
    cfn.create_stack(StackName="slow", TemplateBody=revision_template(), **rev_args("1"))
    assert stack_view(cfn, "slow") == ("CREATE_IN_PROGRESS", {"silo.dev/revision": "1"},
                                       {"Rev": "1"}, {})
    with pytest.raises(ClientError) as exc:
        cfn.update_stack(StackName="slow", TemplateBody=revision_template(), **rev_args("2"))
    assert error_code(exc) == "ValidationError"
    assert "is in CREATE_IN_PROGRESS state and can not be updated." in str(exc.value)
    assert wait_stack(cfn, "slow", "CREATE_IN_PROGRESS") == "CREATE_COMPLETE"
    assert stack_view(cfn, "slow")[3] == {"Rev": "1"}
    created = cfn.describe_stacks(StackName="slow")["Stacks"][0]
    assert "LastUpdatedTime" not in created

    stack_id = cfn.update_stack(StackName="slow", TemplateBody=revision_template(),
                                **rev_args("2"))["StackId"]
    assert stack_view(cfn, "slow") == ("UPDATE_IN_PROGRESS", {"silo.dev/revision": "2"},
                                       {"Rev": "2"}, {"Rev": "2"})
    updating = cfn.describe_stacks(StackName="slow")["Stacks"][0]
    assert updating["LastUpdatedTime"] >= created["CreationTime"]
    with pytest.raises(ClientError) as exc:
        cfn.update_stack(StackName="slow", TemplateBody=revision_template(), **rev_args("3"))
    assert error_code(exc) == "ValidationError"
    assert exc.value.response["Error"]["Message"] == \
        f"Stack:{stack_id} is in UPDATE_IN_PROGRESS state and can not be updated."
    assert wait_stack(cfn, "slow", "UPDATE_IN_PROGRESS") == "UPDATE_COMPLETE"
    assert [s for _, s, _ in stack_events(cfn, "slow")] == [
        "CREATE_IN_PROGRESS", "CREATE_COMPLETE", "UPDATE_IN_PROGRESS",
        "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_COMPLETE"]

    # Three creations in a row are in flight together.
    for name in ("p1", "p2", "p3"):
        cfn.create_stack(StackName=name, TemplateBody=template(name))
    ops = sim.admin("/_silo/stack_operations")[1]
    assert [(o["stack_name"], o["operation"], o["result"]) for o in ops] == [
        ("slow", "CreateStack", "CREATE_COMPLETE"), ("slow", "UpdateStack", "UPDATE_COMPLETE"),
        ("p1", "CreateStack", None), ("p2", "CreateStack", None), ("p3", "CreateStack", None)]
    assert all(o["finished"] is None for o in ops[2:])
    assert ops[1]["stack_id"] == stack_id and ops[1]["account"] == "123456789012"
    assert ops[1]["region"] == REGION and 0.9 <= ops[1]["finished"] - ops[1]["started"] < 30
    p3 = stack_of(cfn, "p3")["StackId"]
    cfn.delete_stack(StackName="p3")
    for name in ("p1", "p2"):
        wait_stack(cfn, name, "CREATE_IN_PROGRESS")
    wait_stack(cfn, p3, "DELETE_IN_PROGRESS")
    ops = sim.admin("/_silo/stack_operations")[1]
    assert [(o["stack_name"], o["operation"], o["result"]) for o in ops[2:]] == [
        ("p1", "CreateStack", "CREATE_COMPLETE"), ("p2", "CreateStack", "CREATE_COMPLETE"),
        ("p3", "CreateStack", "DELETE_IN_PROGRESS"), ("p3", "DeleteStack", "DELETE_COMPLETE")]
    events = sorted([(o["started"], 1) for o in ops] + [(o["finished"], -1) for o in ops])
    in_flight = max(itertools.accumulate(step for _, step in events))
    assert in_flight == 3
    sim.admin("/_silo/reset", {})
    assert sim.admin("/_silo/stack_operations") == (200, [])


def test_stack_failures_by_account_and_parameter(sim: Sim, org: Any) -> None:
    member = assume(sim, new_account(org, "failing"))
    sim.configure(stack_failure_seconds=1, stack_failures=[
        {"operations": ["CreateStack"], "account": "^(?!123456789012$)", "reason": "no quota"},
        {"operations": ["UpdateStack"], "stack": "^tenant-", "parameters": {"Rev": "^bad"},
         "reason": "Resource handler returned message: \"bad revision\""}])
    cfn, member_cfn = sim.client("cloudformation"), sim.client("cloudformation", member)
    member_cfn.create_stack(StackName="tenant-m", TemplateBody=revision_template(), **rev_args("1"))
    assert stack_view(member_cfn, "tenant-m")[0] == "CREATE_FAILED"
    assert ("Topic", "CREATE_FAILED", "no quota") in stack_events(member_cfn, "tenant-m")
    assert topic_names(sim, member) == set()
    assert wait_stack(member_cfn, "tenant-m", "CREATE_FAILED") == "ROLLBACK_COMPLETE"

    cfn.create_stack(StackName="tenant-a", TemplateBody=revision_template(), **rev_args("1"))
    cfn.update_stack(StackName="tenant-a", TemplateBody=revision_template(), **rev_args("2"))
    assert stack_view(cfn, "tenant-a")[0] == "UPDATE_COMPLETE"
    ssm = sim.client("ssm")
    assert ssm.get_parameter(Name="/silo/rev")["Parameter"]["Value"] == "2"

    # A failing update: moto applies it, then it is rolled back.
    bad = revision_template(("Topic", "Extra"))
    cfn.update_stack(StackName="tenant-a", TemplateBody=bad, **rev_args("bad-3"))
    status, tags, params, _ = stack_view(cfn, "tenant-a")
    assert (status, tags, params) == ("UPDATE_ROLLBACK_IN_PROGRESS",
                                      {"silo.dev/revision": "bad-3"}, {"Rev": "bad-3"})
    events = stack_events(cfn, "tenant-a")
    assert ("Extra", "UPDATE_FAILED", "Resource handler returned message: \"bad revision\"") \
        in events
    assert events[-1] == ("tenant-a", "UPDATE_ROLLBACK_IN_PROGRESS",
                          "The following resource(s) failed to update: [Extra]. ")
    with pytest.raises(ClientError) as exc:
        cfn.update_stack(StackName="tenant-a", TemplateBody=revision_template(), **rev_args("4"))
    assert "is in UPDATE_ROLLBACK_IN_PROGRESS state and can not be updated." in str(exc.value)
    assert wait_stack(cfn, "tenant-a", "UPDATE_ROLLBACK_IN_PROGRESS") == "UPDATE_ROLLBACK_COMPLETE"
    assert stack_view(cfn, "tenant-a") == ("UPDATE_ROLLBACK_COMPLETE",
                                           {"silo.dev/revision": "2"}, {"Rev": "2"}, {"Rev": "2"})
    body = cfn.get_template(StackName="tenant-a")["TemplateBody"]   # boto3 parses JSON
    assert (json.loads(body) if isinstance(body, str) else body) == json.loads(revision_template())
    assert ssm.get_parameter(Name="/silo/rev")["Parameter"]["Value"] == "2"
    assert topic_names(sim) == {"topic"}
    assert stack_events(cfn, "tenant-a")[-1][1] == "UPDATE_ROLLBACK_COMPLETE"

    # A rolled-back stack can be updated again; the rule also sees defaults.
    cfn.update_stack(StackName="tenant-a", TemplateBody=revision_template(), **rev_args("5"))
    assert stack_view(cfn, "tenant-a")[:2] == ("UPDATE_COMPLETE", {"silo.dev/revision": "5"})
    cfn.update_stack(StackName="tenant-a", TemplateBody=revision_template(default="bad-6"),
                     Tags=[{"Key": "silo.dev/revision", "Value": "6"}])
    assert stack_view(cfn, "tenant-a")[0] == "UPDATE_ROLLBACK_IN_PROGRESS"
    # Other stacks and the management account's creations are not affected.
    cfn.create_stack(StackName="other", TemplateBody=template("o"))
    cfn.update_stack(StackName="other", TemplateBody=template("p"))
    assert stack_of(cfn, "other")["StackStatus"] == "UPDATE_COMPLETE"
    assert sim.stats()["stacks_failed"] == 3
    ops = [(o["stack_name"], o["operation"], o["result"])
           for o in sim.admin("/_silo/stack_operations")[1]]
    assert ops[:5] == [("tenant-m", "CreateStack", "ROLLBACK_COMPLETE"),
                       ("tenant-a", "CreateStack", "CREATE_COMPLETE"),
                       ("tenant-a", "UpdateStack", "UPDATE_COMPLETE"),
                       ("tenant-a", "UpdateStack", "UPDATE_ROLLBACK_COMPLETE"),
                       ("tenant-a", "UpdateStack", "UPDATE_COMPLETE")]


def test_stack_failures_config_is_checked(sim: Sim) -> None:
    for bad in ([{"operations": ["Delete"]}], [{"stack": "("}], [{"parameters": {"a": 1}}],
                [{"parameters": {"a": "["}}], [{"unknown": "x"}], {"stack": "x"}, ["x"],
                [{"reason": 3}]):
        status, body = sim.admin("/_silo/config", {"stack_failures": bad})
        assert status == 400 and "stack_failures" in body["error"], (bad, body)
    assert sim.admin("/_silo/config", {"stack_operation_seconds": -1})[0] == 400
    rules = [{"stack": "x"}, {"operations": ["UpdateStack"], "parameters": {"A": "b"}}]
    sim.configure(stack_failures=rules, stack_operation_seconds=2.5)
    config = sim.admin("/_silo/config")[1]
    assert config["stack_failures"] == rules and config["stack_operation_seconds"] == 2.5
    sim.admin("/_silo/reset", {})
    config = sim.admin("/_silo/config")[1]
    assert config["stack_failures"] == [] and config["stack_operation_seconds"] == 1
    # Without a reason, a failure says it is simulated.
    sim.configure(**LENIENT, stack_failures=[{"stack": "^x$"}])
    cfn = sim.client("cloudformation")
    cfn.create_stack(StackName="x", TemplateBody=template("x"))
    reasons = [r for lid, s, r in stack_events(cfn, "x") if lid == "Topic" and s == "CREATE_FAILED"]
    assert reasons == ['Resource handler returned message: "Simulated failure (silo-awssim)"']


def changes_of(cfn: Any, name: str, stack: str) -> list[tuple[Any, ...]]:
    changes = cfn.describe_change_set(ChangeSetName=name, StackName=stack)["Changes"]
    assert all(c["Type"] == "Resource" for c in changes)
    return [(c["ResourceChange"]["Action"], c["ResourceChange"]["LogicalResourceId"],
             c["ResourceChange"]["ResourceType"], c["ResourceChange"].get("Replacement"),
             c["ResourceChange"].get("Scope"))
            for c in changes]


def test_change_sets(sim: Sim) -> None:
    sim.configure(stack_operation_seconds=0.5)
    cfn = sim.client("cloudformation")
    made = cfn.create_change_set(StackName="cs", ChangeSetName="rev-1", ChangeSetType="CREATE",
                                 TemplateBody=revision_template(), **rev_args("1"))
    assert stack_of(cfn, "cs")["StackStatus"] == "REVIEW_IN_PROGRESS"
    assert changes_of(cfn, "rev-1", "cs") == [
        ("Add", "Topic", "AWS::SNS::Topic", None, None),
        ("Add", "Param", "AWS::SSM::Parameter", None, None)]
    described = cfn.describe_change_set(ChangeSetName=made["Id"])
    assert (described["Status"], described["ExecutionStatus"]) == ("CREATE_COMPLETE", "AVAILABLE")
    cfn.execute_change_set(ChangeSetName="rev-1", StackName="cs")
    assert stack_view(cfn, "cs")[0] == "CREATE_IN_PROGRESS"
    assert cfn.describe_change_set(ChangeSetName=made["Id"])["ExecutionStatus"] == \
        "EXECUTE_IN_PROGRESS"
    assert wait_stack(cfn, "cs", "CREATE_IN_PROGRESS") == "CREATE_COMPLETE"
    assert stack_view(cfn, "cs")[1:] == ({"silo.dev/revision": "1"}, {"Rev": "1"}, {"Rev": "1"})
    assert cfn.describe_change_set(ChangeSetName=made["Id"])["ExecutionStatus"] == \
        "EXECUTE_COMPLETE"
    with pytest.raises(ClientError) as exc:
        cfn.execute_change_set(ChangeSetName="rev-1", StackName="cs")
    assert error_code(exc) == "InvalidChangeSetStatus"

    # An update: Add, Modify (properties, a changed parameter, a changed type), Remove.
    queue = {"Queue": {"Type": "AWS::SQS::Queue"}}
    cfn.update_stack(StackName="cs", TemplateBody=revision_template(extra=queue), **rev_args("1"))
    wait_stack(cfn, "cs", "UPDATE_IN_PROGRESS")
    cfn.create_change_set(StackName="cs", ChangeSetName="rev-2", ChangeSetType="UPDATE",
                          TemplateBody=revision_template(("Other",), extra=queue),
                          **rev_args("2"))
    assert changes_of(cfn, "rev-2", "cs") == [
        ("Add", "Other", "AWS::SNS::Topic", None, None),
        ("Modify", "Param", "AWS::SSM::Parameter", "Conditional", ["Properties"]),
        ("Remove", "Topic", "AWS::SNS::Topic", None, None)]
    # (moto cannot execute a change of type: this one is only described.)
    cfn.create_change_set(StackName="cs", ChangeSetName="retype", ChangeSetType="UPDATE",
                          TemplateBody=revision_template(
                              extra={"Queue": {"Type": "AWS::SNS::Topic",
                                               "Metadata": {"why": "retype"}}}),
                          **rev_args("1"))
    assert changes_of(cfn, "retype", "cs") == [
        ("Modify", "Queue", "AWS::SNS::Topic", "True", ["Metadata"])]
    cfn.delete_change_set(ChangeSetName="retype", StackName="cs")
    [param] = [c for c in cfn.describe_change_set(ChangeSetName="rev-2", StackName="cs")
               ["Changes"] if c["ResourceChange"]["LogicalResourceId"] == "Param"]
    assert param["ResourceChange"]["PhysicalResourceId"] == "/silo/rev"
    # moto reports no change when only a parameter changes; the layer does.
    cfn.create_change_set(StackName="cs", ChangeSetName="rev-1b", ChangeSetType="UPDATE",
                          UsePreviousTemplate=True, **rev_args("1b"))
    assert changes_of(cfn, "rev-1b", "cs") == [
        ("Modify", "Param", "AWS::SSM::Parameter", "Conditional", ["Properties"])]

    # Change set names are looked up within their stack; listings too.
    cfn.create_stack(StackName="cs2", TemplateBody=template("cs2"))
    cfn.create_change_set(StackName="cs2", ChangeSetName="rev-2", ChangeSetType="UPDATE",
                          TemplateBody=template("cs2-b"))
    wait_stack(cfn, "cs2", "CREATE_IN_PROGRESS")
    assert changes_of(cfn, "rev-2", "cs")[0][1] == "Other"
    assert [c[:2] for c in changes_of(cfn, "rev-2", "cs2")] == [("Modify", "Topic"),
                                                                ("Modify", "Param")]
    assert sorted(s["ChangeSetName"] for s in cfn.list_change_sets(StackName="cs")["Summaries"]) \
        == ["rev-1", "rev-1b", "rev-2"]
    assert [s["StackName"] for s in cfn.list_change_sets(StackName="cs2")["Summaries"]] == ["cs2"]
    for call in (cfn.delete_change_set, cfn.describe_change_set, cfn.execute_change_set):
        with pytest.raises(ClientError) as exc:
            call(ChangeSetName="rev-9", StackName="cs")
        assert error_code(exc) == "ChangeSetNotFound"
    cfn.delete_change_set(ChangeSetName="rev-2", StackName="cs2")
    assert [s["ChangeSetName"] for s in cfn.list_change_sets(StackName="cs")["Summaries"]
            if s["ChangeSetName"] == "rev-2"] == ["rev-2"]

    # Executing an update: the change set's tags, parameters and outputs apply.
    cfn.execute_change_set(ChangeSetName="rev-2", StackName="cs")
    assert stack_view(cfn, "cs")[0] == "UPDATE_IN_PROGRESS"
    with pytest.raises(ClientError) as exc:
        cfn.execute_change_set(ChangeSetName="rev-1b", StackName="cs")
    assert "is in UPDATE_IN_PROGRESS state and can not be updated." in str(exc.value)
    assert wait_stack(cfn, "cs", "UPDATE_IN_PROGRESS") == "UPDATE_COMPLETE"
    assert stack_view(cfn, "cs")[1:] == ({"silo.dev/revision": "2"}, {"Rev": "2"}, {"Rev": "2"})
    assert topic_names(sim) >= {"other"} and "topic" not in topic_names(sim)

    # A failing update through a change set rolls back and fails the execution.
    sim.configure(stack_operation_seconds=0, stack_failure_seconds=0.5,
                  stack_failures=[{"operations": ["UpdateStack"], "parameters": {"Rev": "^3$"}}])
    cfn.create_change_set(StackName="cs", ChangeSetName="rev-3", ChangeSetType="UPDATE",
                          TemplateBody=revision_template(("Other", "Third")), **rev_args("3"))
    cfn.execute_change_set(ChangeSetName="rev-3", StackName="cs")
    assert stack_view(cfn, "cs")[0] == "UPDATE_ROLLBACK_IN_PROGRESS"
    assert wait_stack(cfn, "cs", "UPDATE_ROLLBACK_IN_PROGRESS") == "UPDATE_ROLLBACK_COMPLETE"
    assert stack_view(cfn, "cs")[1:] == ({"silo.dev/revision": "2"}, {"Rev": "2"}, {"Rev": "2"})
    assert cfn.describe_change_set(ChangeSetName="rev-3", StackName="cs")["ExecutionStatus"] == \
        "EXECUTE_FAILED"
    assert "third" not in topic_names(sim)
    assert [o["operation"] for o in sim.admin("/_silo/stack_operations")[1]].count(
        "ExecuteChangeSet") == 3


# ---- Account Management and SCPs ---------------------------------------------

CONTACT = {"Name": "Ops", "Title": "On call", "EmailAddress": "ops@example.com",
           "PhoneNumber": "+1 555 0100"}


def test_account_management_needs_trusted_access(sim: Sim, org: Any) -> None:
    member = new_account(org, "contacts")
    account = sim.client("account")
    with pytest.raises(ClientError) as exc:
        account.put_alternate_contact(AccountId=member, AlternateContactType="OPERATIONS",
                                      **CONTACT)
    assert error_code(exc) == "AccessDeniedException" and http_status(exc) == 403
    message = exc.value.response["Error"]["Message"]
    assert "trusted access" in message and "not enabled" in message
    for call in (lambda: account.put_account_name(AccountId=member, AccountName="x"),
                 lambda: account.get_account_information(AccountId=member)):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc) == "AccessDeniedException"

    org.enable_aws_service_access(ServicePrincipal="account.amazonaws.com")
    assert [s["ServicePrincipal"] for s in org.list_aws_service_access_for_organization()
            ["EnabledServicePrincipals"]] == ["account.amazonaws.com"]
    for kind in ("BILLING", "OPERATIONS", "SECURITY"):
        account.put_alternate_contact(AccountId=member, AlternateContactType=kind,
                                      **dict(CONTACT, Name=kind.lower()))
    got = account.get_alternate_contact(AccountId=member, AlternateContactType="SECURITY")
    assert got["AlternateContact"] == dict(CONTACT, Name="security",
                                           AlternateContactType="SECURITY")
    account.delete_alternate_contact(AccountId=member, AlternateContactType="SECURITY")
    for call in (account.get_alternate_contact, account.delete_alternate_contact):
        with pytest.raises(ClientError) as exc:
            call(AccountId=member, AlternateContactType="SECURITY")
        assert error_code(exc) == "ResourceNotFoundException" and http_status(exc) == 404
    # Contacts are per account: the management account's own are separate.
    with pytest.raises(ClientError) as exc:
        account.get_alternate_contact(AlternateContactType="BILLING")
    assert error_code(exc) == "ResourceNotFoundException"
    account.put_alternate_contact(AlternateContactType="BILLING", **CONTACT)
    assert account.get_alternate_contact(AlternateContactType="BILLING")[
        "AlternateContact"]["Name"] == "Ops"
    assert account.get_alternate_contact(AccountId=member, AlternateContactType="BILLING")[
        "AlternateContact"]["Name"] == "billing"

    for bad in ("111111111111", "123456789012"):
        with pytest.raises(ClientError) as exc:
            account.get_alternate_contact(AccountId=bad, AlternateContactType="BILLING")
        assert error_code(exc) == ("ResourceNotFoundException" if bad.startswith("1111")
                                   else "ValidationException")
    sim.configure(create_account_delay_seconds=60)
    create_account(org, "pending")
    [pending] = sim.stats()["accounts_pending"]
    with pytest.raises(ClientError) as exc:
        account.get_account_information(AccountId=pending)
    assert error_code(exc) == "ResourceNotFoundException"
    # A member account may not name another account.
    member_account = sim.client("account", assume(sim, member))
    with pytest.raises(ClientError) as exc:
        member_account.get_account_information(AccountId="123456789012")
    assert error_code(exc) == "AccessDeniedException"
    org.disable_aws_service_access(ServicePrincipal="account.amazonaws.com")
    with pytest.raises(ClientError) as exc:
        account.get_alternate_contact(AccountId=member, AlternateContactType="BILLING")
    assert error_code(exc) == "AccessDeniedException"
    # Every attempt counts, the denied one too.
    assert sim.stats()["writes_by_access_key"]["testing"]["account:PutAlternateContact"] == 5


def test_put_account_name_renames_in_organizations(sim: Sim, org: Any) -> None:
    member = new_account(org, "old-name")
    root = org.list_roots()["Roots"][0]["Id"]
    org.enable_aws_service_access(ServicePrincipal="account.amazonaws.com")
    account = sim.client("account")
    info = account.get_account_information(AccountId=member)
    assert (info["AccountId"], info["AccountName"], info["AccountState"]) == \
        (member, "old-name", "ACTIVE")
    assert abs(info["AccountCreatedDate"].timestamp() - time.time()) < 300
    account.put_account_name(AccountId=member, AccountName="Acme Corp (prod)")
    assert account.get_account_information(AccountId=member)["AccountName"] == "Acme Corp (prod)"
    assert org.describe_account(AccountId=member)["Account"]["Name"] == "Acme Corp (prod)"
    names = {a["Id"]: a["Name"] for a in org.list_accounts()["Accounts"]}
    assert names[member] == "Acme Corp (prod)"
    assert {a["Id"]: a["Name"] for a in org.list_accounts_for_parent(ParentId=root)
            ["Accounts"]}[member] == "Acme Corp (prod)"
    unchecked = sim.client("account", config=Config(parameter_validation=False,
                                                     retries={"total_max_attempts": 1}))
    for bad in ("", "x" * 51, "a<b"):
        with pytest.raises(ClientError) as exc:
            unchecked.put_account_name(AccountId=member, AccountName=bad)
        assert error_code(exc) == "ValidationException"
    # A member renames itself without AccountId; the management account too.
    sim.client("account", assume(sim, member)).put_account_name(AccountName="self-named")
    assert org.describe_account(AccountId=member)["Account"]["Name"] == "self-named"
    account.put_account_name(AccountName="Management")
    assert account.get_account_information()["AccountName"] == "Management"
    assert org.describe_account(AccountId="123456789012")["Account"]["Name"] == "Management"
    org.close_account(AccountId=member)
    assert account.get_account_information(AccountId=member)["AccountState"] == "SUSPENDED"


def test_account_calls_are_throttled_the_rest_json_way(sim: Sim) -> None:
    sim.configure(throttle_rate=1.0, throttle_operations=["account:GetAccountInformation"])
    with pytest.raises(ClientError) as exc:
        sim.client("account").get_account_information()
    assert error_code(exc) == "TooManyRequestsException" and http_status(exc) == 429
    assert sim.stats()["throttled"] == {"account:GetAccountInformation": 1}


def test_scp_limit_per_target(sim: Sim, org: Any) -> None:
    member = new_account(org, "guarded")
    root = org.list_roots()["Roots"][0]["Id"]
    org.enable_policy_type(RootId=root, PolicyType="SERVICE_CONTROL_POLICY")

    def scps(target: str) -> list[str]:
        return [p["Name"] for p in org.list_policies_for_target(
            TargetId=target, Filter="SERVICE_CONTROL_POLICY")["Policies"]]

    assert scps(member) == ["FullAWSAccess"]   # moto attaches it to every account
    content = json.dumps({"Version": "2012-10-17",
                          "Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]})
    ids = [org.create_policy(Name=f"deny-{i}", Description="", Type="SERVICE_CONTROL_POLICY",
                             Content=content)["Policy"]["PolicySummary"]["Id"] for i in range(6)]
    for policy in ids[:4]:
        org.attach_policy(PolicyId=policy, TargetId=member)
    assert len(scps(member)) == 5
    with pytest.raises(ClientError) as exc:
        org.attach_policy(PolicyId=ids[4], TargetId=member)
    assert error_code(exc) == "ConstraintViolationException" and http_status(exc) == 400
    assert exc.value.response["Reason"] == "MAX_POLICY_TYPE_ATTACHMENT_LIMIT_EXCEEDED"
    assert len(scps(member)) == 5
    with pytest.raises(ClientError) as exc:
        org.attach_policy(PolicyId=ids[0], TargetId=member)
    assert error_code(exc) == "DuplicatePolicyAttachmentException"
    # Other policy types do not count; detaching frees a slot; the root has its own 5.
    tag_policy = org.create_policy(Name="tags", Description="", Type="TAG_POLICY",
                                   Content=json.dumps({"tags": {}}))["Policy"]["PolicySummary"]
    org.attach_policy(PolicyId=tag_policy["Id"], TargetId=member)
    org.detach_policy(PolicyId="p-FullAWSAccess", TargetId=member)
    org.attach_policy(PolicyId=ids[4], TargetId=member)
    assert sorted(scps(member)) == [f"deny-{i}" for i in range(5)]
    for policy in ids[:4]:
        org.attach_policy(PolicyId=policy, TargetId=root)
    with pytest.raises(ClientError) as exc:
        org.attach_policy(PolicyId=ids[5], TargetId=root)
    assert exc.value.response["Reason"] == "MAX_POLICY_TYPE_ATTACHMENT_LIMIT_EXCEEDED"


# ---- large organizations ---------------------------------------------------------

def test_large_organization_listings(sim: Sim, org: Any) -> None:
    ids = [org.create_account(AccountName=f"t{i}", Email=f"t{i}@example.com")
           ["CreateAccountStatus"]["AccountId"] for i in range(300)]
    master = "123456789012"
    pages = [p["Accounts"] for p in org.get_paginator("list_accounts").paginate(
        PaginationConfig={"PageSize": 20})]
    assert [len(p) for p in pages] == [20] * 15 + [1]
    assert [a["Id"] for p in pages for a in p] == [master] + ids   # join order
    assert len(org.list_accounts()["Accounts"]) == 100             # moto's default page
    root = org.list_roots()["Roots"][0]["Id"]
    ou = org.create_organizational_unit(ParentId=root, Name="moved")["OrganizationalUnit"]["Id"]
    for account in ids[::10]:
        org.move_account(AccountId=account, SourceParentId=root, DestinationParentId=ou)

    def walk(parent: str) -> list[str]:
        return [a["Id"] for p in org.get_paginator("list_accounts_for_parent").paginate(
            ParentId=parent, PaginationConfig={"PageSize": 20}) for a in p["Accounts"]]

    assert walk(ou) == ids[::10]
    assert walk(root) == [master] + [a for i, a in enumerate(ids) if i % 10]
    token = org.list_accounts_for_parent(ParentId=root, MaxResults=20)["NextToken"]
    for bad in (token, "garbage"):
        with pytest.raises(ClientError) as exc:
            org.list_accounts_for_parent(ParentId=ou, NextToken=bad)
        assert error_code(exc) == "InvalidInputException"
    # The account lookups Silo makes stay correct.
    one = ids[150]
    assert org.describe_account(AccountId=one)["Account"]["Name"] == "t150"
    assert org.list_parents(ChildId=ids[10])["Parents"] == [{"Id": ou,
                                                            "Type": "ORGANIZATIONAL_UNIT"}]
    assert [p["Name"] for p in org.list_policies_for_target(
        TargetId=one, Filter="SERVICE_CONTROL_POLICY")["Policies"]] == ["FullAWSAccess"]
    targets = org.list_targets_for_policy(PolicyId="p-FullAWSAccess")["Targets"]
    assert len(targets) == 303   # the root, the OU, the management account, 300 accounts
    create_account(org, "dup", "T7@example.com")   # the email index sees every account
    failed = org.list_create_account_status(States=["FAILED"])["CreateAccountStatuses"]
    assert [s["FailureReason"] for s in failed] == ["EMAIL_ALREADY_EXISTS"]


def test_moto_speed_ups_keep_its_answers() -> None:
    """In this process (not the server): the patched access-key lookup finds
    the same accounts as moto's, without creating IAM backends for every
    partition of every account as moto's does."""
    sys.path.insert(0, HERE)
    import silo_awssim
    from moto.iam.models import iam_backends
    from moto.moto_api._internal.models import moto_api_backend
    from moto.organizations.models import organizations_backends

    silo_awssim.speed_up_moto()
    from moto.iam.models import get_account_id_from

    try:
        backend = organizations_backends["123456789012"]["aws"]
        backend.create_organization(region="us-east-1", FeatureSet="ALL")
        member = backend.create_account(AccountName="m", Email="m@example.com")[
            "CreateAccountStatus"]["AccountId"]
        assert backend.accounts[-1].attached_policies[0].id == "p-FullAWSAccess"
        assert get_account_id_from("testing") == "123456789012"
        assert list(dict.keys(iam_backends[member])) == ["aws"]   # moto's made 6
        key = iam_backends[member]["aws"].create_temp_access_key()
        assert get_account_id_from(key.access_key_id) == member
        assert get_account_id_from(key.access_key_id) == member
        del iam_backends[member]["aws"].access_keys[key.access_key_id]
        assert get_account_id_from(key.access_key_id) == "123456789012"
        # Backends of a new account are made and registered for reset as moto does.
        from moto.core.base_backend import BackendDict
        from moto.sns.models import sns_backends

        assert sns_backends["210987654321"]["us-east-1"].account_id == "210987654321"
        assert sns_backends in BackendDict._instances
        moto_api_backend.reset()
        assert "210987654321" not in dict.keys(sns_backends)
    finally:
        moto_api_backend.reset()
        organizations_backends.master_accounts.clear()


def test_client_request_token_makes_a_retry_the_same_request(sim: Sim) -> None:
    sim.configure(stack_operation_seconds=1)
    cfn = sim.client("cloudformation")
    stack_id = cfn.create_stack(StackName="tok", TemplateBody=revision_template(),
                                ClientRequestToken="create-1", **rev_args("1"))["StackId"]
    again = cfn.create_stack(StackName="tok", TemplateBody=revision_template(),
                             ClientRequestToken="create-1", **rev_args("1"))
    assert again["StackId"] == stack_id
    with pytest.raises(ClientError) as exc:
        cfn.create_stack(StackName="tok", TemplateBody=revision_template(),
                         ClientRequestToken="create-2", **rev_args("1"))
    assert error_code(exc) == "AlreadyExistsException"
    wait_stack(cfn, "tok", "CREATE_IN_PROGRESS")
    cfn.update_stack(StackName="tok", TemplateBody=revision_template(),
                     ClientRequestToken="update-2", **rev_args("2"))
    retried = cfn.update_stack(StackName=stack_id, TemplateBody=revision_template(),
                               ClientRequestToken="update-2", **rev_args("2"))
    assert retried["StackId"] == stack_id
    with pytest.raises(ClientError) as exc:
        cfn.update_stack(StackName="tok", TemplateBody=revision_template(),
                         ClientRequestToken="update-3", **rev_args("3"))
    assert "is in UPDATE_IN_PROGRESS state" in str(exc.value)
    assert wait_stack(cfn, "tok", "UPDATE_IN_PROGRESS") == "UPDATE_COMPLETE"
    # Still the same request once it is over: nothing changes.
    cfn.update_stack(StackName="tok", TemplateBody=revision_template(),
                     ClientRequestToken="update-2", **rev_args("2"))
    assert stack_view(cfn, "tok")[:2] == ("UPDATE_COMPLETE", {"silo.dev/revision": "2"})
    ops = sim.admin("/_silo/stack_operations")[1]
    assert [(o["operation"], o["result"]) for o in ops] == [
        ("CreateStack", "CREATE_COMPLETE"), ("UpdateStack", "UPDATE_COMPLETE")]
    # A deleted stack's token starts a new stack.
    cfn.delete_stack(StackName="tok")
    wait_stack(cfn, stack_id, "DELETE_IN_PROGRESS")
    assert cfn.create_stack(StackName="tok", TemplateBody=revision_template(),
                            ClientRequestToken="create-1", **rev_args("1"))["StackId"] != stack_id


def test_refusals_answer_an_operation_with_an_aws_error(sim: Sim, org: Any) -> None:
    sim.configure(refusals={"organizations:ListRoots": {"code": "AccessDeniedException", "times": 2}})
    for _ in range(2):
        with pytest.raises(ClientError) as err:
            org.list_roots()
        assert err.value.response["Error"]["Code"] == "AccessDeniedException"
    assert org.list_roots()["Roots"], "after `times` refusals the operation works again"
    assert sim.stats()["refused"]["organizations:ListRoots"] == 2
    code, body = sim.admin("/_silo/config", {"refusals": {"organizations:ListRoots": {"times": 1}}})
    assert code == 400, body


# ---- defaults: as strict as AWS ------------------------------------------------

def test_defaults_are_as_strict_as_aws(strict_sim: Sim) -> None:
    sim = strict_sim
    config = sim.admin("/_silo/config")[1]
    assert config["unique_emails"] and config["account_limit"] == 10
    assert config["close_quota"] == "aws" and config["close_quota_window_seconds"] == 30 * 86400
    assert config["closed_after_seconds"] == 90 * 86400 and config["close_pending_seconds"] > 0
    assert config["rate_limits"]["account:PutAccountName"] == 1
    org = sim.client("organizations")
    org.create_organization(FeatureSet="ALL")
    created = org.create_account(AccountName="slow", Email="slow@example.com")
    assert created["CreateAccountStatus"]["State"] == "IN_PROGRESS", "creation takes time"
    status = wait_status(org, created["CreateAccountStatus"]["Id"])
    account = status["AccountId"]
    assert account not in account_ids(org), "a new account is missing from listings at first"
    with pytest.raises(ClientError) as exc:
        assume(sim, account)
    assert error_code(exc) == "AccessDenied", "a new account's role is not assumable at once"
    org.close_account(AccountId=account)
    assert org.describe_account(AccountId=account)["Account"]["State"] == "PENDING_CLOSURE"
    cfn = sim.client("cloudformation")
    cfn.create_stack(StackName="slow", TemplateBody=template("slow"))
    assert cfn.describe_stacks(StackName="slow")["Stacks"][0]["StackStatus"] == "CREATE_IN_PROGRESS"


def test_default_request_rates_throttle_callers_but_not_the_observer(strict_sim: Sim) -> None:
    sim = strict_sim
    org = sim.client("organizations")
    org.create_organization(FeatureSet="ALL")
    observer = sim.client("organizations", {"aws_access_key_id": "observer",
                                            "aws_secret_access_key": "observer"})
    assert observer.describe_organization()["Organization"]["MasterAccountId"] == "123456789012"

    def throttled(call: Any, times: int) -> int:
        n = 0
        for _ in range(times):
            try:
                call()
            except ClientError as err:
                assert error_code_of(err) in ("TooManyRequestsException", "Throttling"), err
                n += 1
        return n

    assert throttled(org.list_roots, 25) > 0, "Organizations: 10 requests per second"
    assert throttled(observer.list_roots, 25) == 0, "the observer is never throttled"
    sim.configure(list_accounts_lag_seconds=60)
    assert wait_status(observer, create_account(observer, "new"))["State"] == "SUCCEEDED"
    patient = sim.client("organizations", config=Config(
        retries={"total_max_attempts": 10, "mode": "standard"}))   # the bucket may be empty
    assert len(patient.list_accounts()["Accounts"]) == 1, "callers meet the listing lag"
    assert len(observer.list_accounts()["Accounts"]) == 2, "the observer sees every account"
    account = sim.client("account")
    assert throttled(account.get_account_information, 6) > 0, "3 per second per caller"
    stats = sim.stats()
    assert stats["throttled"]["organizations:ListRoots"] > 0
    assert stats["requests"]["organizations:ListRoots"] >= 50, "observer requests count too"


def error_code_of(err: ClientError) -> str:
    return err.response["Error"]["Code"]


# ---- CloudFormation: DeleteStack over time, DELETE_FAILED, termination protection ------

def stack_ops(sim: Sim, name: str) -> list[tuple[str, str | None]]:
    """(operation, result) of every recorded operation on stacks named `name`."""
    return [(o["operation"], o["result"]) for o in sim.admin("/_silo/stack_operations")[1]
            if o["stack_name"] == name]


def test_delete_stack_takes_time(sim: Sim) -> None:
    sim.configure(stack_operation_seconds=1)
    cfn = sim.client("cloudformation")
    stack_id = cfn.create_stack(StackName="going", TemplateBody=revision_template(),
                                **rev_args("1"))["StackId"]
    wait_stack(cfn, "going", "CREATE_IN_PROGRESS")
    cfn.delete_stack(StackName="going")
    assert stack_of(cfn, "going")["StackStatus"] == "DELETE_IN_PROGRESS"
    # Deleting again while it is being deleted is accepted and changes nothing.
    cfn.delete_stack(StackName=stack_id)
    # The name is still taken until the deletion is over.
    with pytest.raises(ClientError) as exc:
        cfn.create_stack(StackName="going", TemplateBody=revision_template(), **rev_args("2"))
    assert error_code(exc) == "AlreadyExistsException"
    assert wait_stack(cfn, stack_id, "DELETE_IN_PROGRESS") == "DELETE_COMPLETE"
    # Gone by name, as on AWS; by id DescribeStacks still shows it DELETE_COMPLETE.
    with pytest.raises(ClientError) as exc:
        stack_of(cfn, "going")
    assert error_code(exc) == "ValidationError" and "does not exist" in str(exc.value)
    assert stack_of(cfn, stack_id)["StackStatus"] == "DELETE_COMPLETE"
    assert topic_names(sim) == set()
    assert [s for _, s, _ in stack_events(cfn, stack_id)][-2:] == [
        "DELETE_IN_PROGRESS", "DELETE_COMPLETE"]
    ops = [o for o in sim.admin("/_silo/stack_operations")[1] if o["operation"] == "DeleteStack"]
    assert len(ops) == 1 and ops[0]["result"] == "DELETE_COMPLETE"
    assert ops[0]["stack_id"] == stack_id and 0.9 <= ops[0]["finished"] - ops[0]["started"] < 30
    # Deleting a deleted stack, or one that never existed, is accepted (as moto does).
    cfn.delete_stack(StackName=stack_id)
    cfn.delete_stack(StackName="never")
    assert stack_ops(sim, "going") == [("CreateStack", "CREATE_COMPLETE"),
                                       ("DeleteStack", "DELETE_COMPLETE")]
    # With the default of 0 s a stack is DELETE_COMPLETE when DeleteStack answers.
    sim.configure(stack_operation_seconds=0)
    cfn.create_stack(StackName="quick", TemplateBody=template("q"))
    quick = stack_of(cfn, "quick")["StackId"]
    cfn.delete_stack(StackName="quick")
    assert stack_of(cfn, quick)["StackStatus"] == "DELETE_COMPLETE"


def test_delete_failure_then_retain_succeeds(sim: Sim) -> None:
    reason = "Resource handler returned message: \"The bucket you tried to delete is not empty\""
    sim.configure(stack_operation_seconds=0.5, stack_failures=[
        {"operations": ["DeleteStack"], "stack": "^stuck$", "reason": reason}])
    cfn, ssm = sim.client("cloudformation"), sim.client("ssm")
    stack_id = cfn.create_stack(StackName="stuck", **rev_args("1"),
                                TemplateBody=revision_template(("Topic", "Other")))["StackId"]
    wait_stack(cfn, "stuck", "CREATE_IN_PROGRESS")
    cfn.delete_stack(StackName="stuck")
    assert stack_of(cfn, "stuck")["StackStatus"] == "DELETE_IN_PROGRESS"
    assert wait_stack(cfn, "stuck", "DELETE_IN_PROGRESS") == "DELETE_FAILED"
    summary = "The following resource(s) failed to delete: [Topic]. "
    stack = stack_of(cfn, "stuck")     # still there, by name too
    assert stack["StackStatusReason"] == summary
    events = stack_events(cfn, "stuck")
    assert events[-3:] == [("Topic", "DELETE_IN_PROGRESS", None),
                           ("Topic", "DELETE_FAILED", reason), ("stuck", "DELETE_FAILED", summary)]
    failed = [e for e in cfn.describe_stack_events(StackName="stuck")["StackEvents"]
              if e["ResourceStatus"] == "DELETE_FAILED" and e["LogicalResourceId"] == "Topic"]
    assert failed[0]["ResourceType"] == "AWS::SNS::Topic"
    # Only the resource that failed is left.
    assert topic_names(sim) == {"topic"}
    assert ssm.describe_parameters()["Parameters"] == []
    resources = cfn.describe_stack_resources(StackName="stuck")["StackResources"]
    assert [r["LogicalResourceId"] for r in resources] == ["Topic"]
    with pytest.raises(ClientError) as exc:
        cfn.update_stack(StackName="stuck", TemplateBody=revision_template(), **rev_args("2"))
    assert "is in DELETE_FAILED state and can not be updated." in str(exc.value)

    # Deleting again without RetainResources fails again: the rule still matches.
    cfn.delete_stack(StackName="stuck")
    assert stack_of(cfn, "stuck")["StackStatus"] == "DELETE_IN_PROGRESS"
    assert wait_stack(cfn, "stuck", "DELETE_IN_PROGRESS") == "DELETE_FAILED"
    assert topic_names(sim) == {"topic"}

    # Only the resources that failed to delete can be retained.
    for wrong in (["Other"], ["Topic", "Other"], ["Nothing"]):
        with pytest.raises(ClientError) as exc:
            cfn.delete_stack(StackName="stuck", RetainResources=wrong)
        assert error_code(exc) == "ValidationError" and "resources to retain" in str(exc.value)
    assert stack_of(cfn, "stuck")["StackStatus"] == "DELETE_FAILED"

    cfn.delete_stack(StackName="stuck", RetainResources=["Topic"])
    assert stack_of(cfn, "stuck")["StackStatus"] == "DELETE_IN_PROGRESS"
    assert wait_stack(cfn, stack_id, "DELETE_IN_PROGRESS") == "DELETE_COMPLETE"
    assert ("Topic", "DELETE_SKIPPED", None) in stack_events(cfn, stack_id)
    assert topic_names(sim) == {"topic"}, "a retained resource outlives its stack"
    assert stack_ops(sim, "stuck") == [
        ("CreateStack", "CREATE_COMPLETE"), ("DeleteStack", "DELETE_FAILED"),
        ("DeleteStack", "DELETE_FAILED"), ("DeleteStack", "DELETE_COMPLETE")]
    assert sim.stats()["stacks_failed"] == 2


def test_retain_resources_is_refused_outside_delete_failed(sim: Sim) -> None:
    cfn = sim.client("cloudformation")
    stack_id = cfn.create_stack(StackName="fine", TemplateBody=template("f"))["StackId"]
    with pytest.raises(ClientError) as exc:
        cfn.delete_stack(StackName="fine", RetainResources=["Topic"])
    assert error_code(exc) == "ValidationError" and http_status(exc) == 400
    assert exc.value.response["Error"]["Message"] == (
        f"Invalid operation on stack [{stack_id}]. RetainResources can only be specified when "
        "the stack is in the DELETE_FAILED state.")
    assert stack_of(cfn, "fine")["StackStatus"] == "CREATE_COMPLETE"
    assert stack_ops(sim, "fine") == [("CreateStack", "CREATE_COMPLETE")]


def test_delete_failures_times_and_defaults(sim: Sim) -> None:
    for bad in ([{"operations": ["DeleteStack"], "times": -1}], [{"times": 1.5}],
                [{"times": "2"}], [{"operations": ["DescribeStacks"]}]):
        status, body = sim.admin("/_silo/config", {"stack_failures": bad})
        assert status == 400 and "stack_failures" in body["error"], (bad, body)
    sim.configure(stack_failure_seconds=0, failing_stacks={"^empty$": "no"}, stack_failures=[
        {"stack": "^plain$"},                                   # no operations: not DeleteStack
        {"operations": ["DeleteStack"], "stack": "^(once|empty)$", "times": 1}])
    cfn = sim.client("cloudformation")
    # A rule that does not name DeleteStack never fails a deletion (failing_stacks neither).
    cfn.create_stack(StackName="plain", TemplateBody=template("p"))
    assert stack_of(cfn, "plain")["StackStatus"] == "ROLLBACK_COMPLETE"
    cfn.delete_stack(StackName="plain")
    # A stack with no resources left has nothing that could fail to delete.
    cfn.create_stack(StackName="empty", TemplateBody=template("e"))
    assert stack_of(cfn, "empty")["StackStatus"] == "ROLLBACK_COMPLETE"
    cfn.delete_stack(StackName="empty")
    assert stack_ops(sim, "plain")[-1] == stack_ops(sim, "empty")[-1] == (
        "DeleteStack", "DELETE_COMPLETE")
    # times: 1 -- the first deletion fails, the next one (no RetainResources) succeeds.
    cfn.create_stack(StackName="once", TemplateBody=template("o"))
    cfn.delete_stack(StackName="once")
    assert stack_of(cfn, "once")["StackStatus"] == "DELETE_FAILED"
    cfn.delete_stack(StackName="once")
    assert stack_ops(sim, "once") == [("CreateStack", "CREATE_COMPLETE"),
                                      ("DeleteStack", "DELETE_FAILED"),
                                      ("DeleteStack", "DELETE_COMPLETE")]
    assert topic_names(sim) == set()
    # Setting stack_failures again starts the counts again.
    sim.configure(stack_failures=[{"operations": ["DeleteStack"], "times": 1}])
    cfn.create_stack(StackName="once", TemplateBody=template("o"))
    cfn.delete_stack(StackName="once")
    assert stack_of(cfn, "once")["StackStatus"] == "DELETE_FAILED"


def test_termination_protection_blocks_delete_until_turned_off(sim: Sim) -> None:
    cfn = sim.client("cloudformation")
    stack_id = cfn.create_stack(StackName="kept", TemplateBody=template("k"),
                                EnableTerminationProtection=True)["StackId"]
    assert stack_of(cfn, "kept")["EnableTerminationProtection"] is True
    for name in ("kept", stack_id):
        with pytest.raises(ClientError) as exc:
            cfn.delete_stack(StackName=name)
        assert error_code(exc) == "ValidationError" and http_status(exc) == 400
        assert exc.value.response["Error"]["Message"] == \
            f"Stack [{name}] cannot be deleted while TerminationProtection is enabled"
    assert stack_of(cfn, "kept")["StackStatus"] == "CREATE_COMPLETE"
    assert topic_names(sim) == {"t-k"}
    assert stack_ops(sim, "kept") == [("CreateStack", "CREATE_COMPLETE")]

    # Turned off the way Silo does it (by stack id), the stack can be deleted.
    answer = cfn.update_termination_protection(StackName=stack_id,
                                               EnableTerminationProtection=False)
    assert answer["StackId"] == stack_id
    assert stack_of(cfn, "kept")["EnableTerminationProtection"] is False
    cfn.delete_stack(StackName=stack_id)
    assert stack_of(cfn, stack_id)["StackStatus"] == "DELETE_COMPLETE"
    # Not on a deleted stack, nor one that does not exist.
    for name, words in ((stack_id, "is in DELETE_COMPLETE state"), ("nope", "does not exist")):
        with pytest.raises(ClientError) as exc:
            cfn.update_termination_protection(StackName=name, EnableTerminationProtection=True)
        assert error_code(exc) == "ValidationError" and words in str(exc.value)

    # Turned on after creation, by name, it protects too.
    cfn.create_stack(StackName="later", TemplateBody=template("l"))
    cfn.update_termination_protection(StackName="later", EnableTerminationProtection=True)
    with pytest.raises(ClientError) as exc:
        cfn.delete_stack(StackName="later")
    assert "cannot be deleted while TerminationProtection is enabled" in str(exc.value)
    # A write, counted like the others (the two refused ones too).
    assert sim.stats()["writes_by_access_key"]["testing"][
        "cloudformation:UpdateTerminationProtection"] == 4
