#!/usr/bin/env python3
"""silo-awssim: moto's server plus the AWS faults and quotas moto lacks.

moto's server runs in-process (werkzeug, threaded). A thin WSGI middleware
(`SiloLayer`) sits in front of it and, per request, can delay, throttle or fail
it, enforce Organizations quotas, and rewrite moto's answers so that slow or
failing AWS workflows (account creation, account closure, stack creation,
role assumption) look the way they do on real AWS. By default the simulator is
as strict as AWS (see the constants above `Config`): AWS's request rates and
quotas, creations, listings, role propagation, closures and stack operations
that take time (compressed from AWS's minutes to seconds, never 0), emails that
stay taken. Random faults (throttling, 5xx, latency) are off by default. A test
changes any of it through the admin API under /_silo/:

    POST /_silo/reset    reset moto and every fault, counter and config key
    POST /_silo/config   merge a JSON object into the config (unknown key: 400)
    GET  /_silo/config   the current config
    GET  /_silo/stats    request, throttle and error counters
    GET  /_silo/log?since=N&limit=L   the per-request log, oldest first (below)
    GET  /_silo/stack_operations   every stack operation (below)
    GET  /_silo/health   {"ok": true}

Config keys are listed (with defaults) on `Config`. Dict-valued keys are
replaced whole by a config update, not merged. Keys that name operations use
`service:Operation` (credential-scope service, e.g. "organizations:CreateAccount"),
`service:*` or `*`; where one value is picked, the most specific key wins.

Stats (GET /_silo/stats), per `service:Operation` unless noted:
    requests                  every AWS request the layer saw
    answered                  requests answered by moto or the layer's own
                              handlers without an injected fault (not
                              throttled, no injected 5xx); AWS-style 4xx
                              answers such as AccountNotFoundException count
    throttled                 throttling answers (rates, quotas, concurrency)
    injected_errors           injected 5xx answers
    latency_injected          requests delayed before processing (latency_*)
    response_delayed          answers held back after processing (response_delays_ms)
    accounts_created          (int) creations that made an account
    create_account_failures   {FailureReason: n} synthetic failed creations
    accounts_closed, assume_role_denied   (ints)
    stacks_failed             (int) stack operations made to fail (failing_stacks,
                              stack_failures): creations, updates and deletions
    sessions   (the last 500 AssumeRole requests: role, name, tags, external_id, policy,
               denied: null if the layer let it through to moto, else why it
               answered AccessDenied: "unassumable", "no such role", "trust policy",
               "tag session")
    accounts_pending          (ids) creation still IN_PROGRESS: unknown to every call
    accounts_unlisted         (ids) ACTIVE but still missing from listings
                              (list_accounts_lag_seconds)
    by_access_key             {access key: {service:Operation: n}} every AWS
                              request by the access key that signed it
    writes_by_access_key      the same, for mutating Organizations,
                              CloudFormation and Account Management calls
                              only: every operation of those services whose
                              name does not start with Describe, List, Get,
                              Validate or Estimate (CreateAccount, MoveAccount,
                              TagResource, CreateStack, ExecuteChangeSet,
                              AttachPolicy, PutAlternateContact, ...)
    writes_by_session         {role session name: {service:Operation: n}}
                              the same writes, signed with a role session's
                              temporary key, by the RoleSessionName it was
                              asked with (which replica acted, as CloudTrail
                              tells it)
    Like `requests`, both count every request, throttled or failed ones too.

Request log (GET /_silo/log): every AWS request the layer answered, in the
order the answers were sent, as {"next": M, "entries": [...], "more": bool,
"dropped": n}. `since=N` (default 0) returns entries with seq >= N, at most
`limit` (default 10,000) of them; pass `next` as the next `since`; `more` says
more entries are already waiting, `dropped` how many entries at or after N are
gone. The layer keeps the last 200,000 entries (LOG_LIMIT; older ones are
dropped; that is about 150 MB at most); reset clears it and restarts seq at 0.
An entry:
    seq             0, 1, 2, ... in answer order
    time            wall clock (float seconds) when the request arrived
    duration        seconds from arrival to answer (latency and holds included)
    service, operation, key   credential-scope service, operation, service:Operation
    caller_account  the account moto acts as for the request's access key
    access_key      the access key id from the SigV4 Authorization header
    user_agent      the HTTP User-Agent
    status          the HTTP status returned
    outcome         "throttled" (counted in stats throttled), "error" (an
                    injected 5xx) or "answered" (everything else, AWS-style
                    4xx answers included: see `status`)
    stack_name      the StackName parameter, when present
    account_id      the AccountId, else ResourceId, else ChildId parameter,
                    when present
    region          the region of the SigV4 credential scope, when present

Stack operations (GET /_silo/stack_operations): a JSON list, oldest first, of
every CreateStack, UpdateStack, ExecuteChangeSet and DeleteStack that was
accepted (the last 200,000), each {account, region, stack_name, stack_id,
operation, started, finished, result}: wall-clock seconds; `finished` and
`result` (the stack status it ended in: CREATE_COMPLETE, ROLLBACK_COMPLETE,
UPDATE_COMPLETE, UPDATE_ROLLBACK_COMPLETE, ...) are null while in flight.
`finished` is when the operation was due to end, even if the layer only
noticed later. A DeleteStack ends DELETE_COMPLETE or DELETE_FAILED; one the
layer refused (termination protection, RetainResources), or sent while the
stack is already DELETE_IN_PROGRESS or gone, is not recorded. An operation
cut short by DeleteStack ends when DeleteStack arrives, with DELETE_IN_PROGRESS.

Stacks over time. moto makes and updates a stack's resources at once (the
layer deletes them when a deletion ends); the layer reports the stack the way
AWS does over `stack_operation_seconds`:
  CreateStack (or executing a CREATE change set): CREATE_IN_PROGRESS without
    Outputs, then CREATE_COMPLETE with them.
  UpdateStack (or executing an UPDATE change set): UPDATE_IN_PROGRESS, then
    UPDATE_COMPLETE (an UPDATE_COMPLETE_CLEANUP_IN_PROGRESS event just before
    it, never a status one can see). While UPDATE_IN_PROGRESS, DescribeStacks
    already shows the new template, parameters, tags and outputs, and
    LastUpdatedTime is the time of the update (moto sets only CreationTime).
  ClientRequestToken (moto ignores it): a CreateStack or UpdateStack that
    repeats the token of an earlier CreateStack / UpdateStack of the same
    stack is that same request retried: answered with its StackId, nothing
    changes, no new operation is recorded, whatever state the stack is in.
  DeleteStack: DELETE_IN_PROGRESS, then DELETE_COMPLETE: moto deletes the
    resources (except those retained, see below), and the stack is gone from
    DescribeStacks by name (a new stack may take the name) while DescribeStacks
    by stack id still shows it DELETE_COMPLETE, as on AWS. With the default of
    0 s it is DELETE_COMPLETE when the call answers. A DeleteStack of a stack
    already DELETE_IN_PROGRESS, deleted, or never made is accepted and changes
    nothing. It is accepted in every other state too, and an operation in
    flight on the stack ends there (see stack operations above). AWS refuses
    it in some states (users report "Stack [<name>] cannot be deleted while
    in status UPDATE_IN_PROGRESS"; the API reference does not list them): not
    simulated.
  A stack that is not CREATE_COMPLETE, UPDATE_COMPLETE or
  UPDATE_ROLLBACK_COMPLETE cannot be updated: UpdateStack and an UPDATE
  ExecuteChangeSet answer ValidationError "Stack:<id> is in <STATUS> state and
  can not be updated."
Termination protection (moto keeps CreateStack's EnableTerminationProtection
but ignores it; moto 5.2.5 has no UpdateTerminationProtection): DeleteStack
of a protected stack answers ValidationError "Stack [<StackName as given>]
cannot be deleted while TerminationProtection is enabled" and changes nothing.
UpdateTerminationProtection (StackName: name or id, EnableTerminationProtection)
sets the flag and answers the StackId; on a stack DELETE_IN_PROGRESS or
DELETE_COMPLETE it is a ValidationError (AWS: protection can be set in any
other status), on an unknown stack "Stack with id <name> does not exist".
Failing stack operations (`failing_stacks`, `stack_failures`; the first
matching rule wins, failing_stacks first):
  a creation is CREATE_IN_PROGRESS for stack_operation_seconds, then
    CREATE_FAILED (a resource CREATE_FAILED event with the reason; nothing it
    made remains: no resources, outputs or exports, from the start) for
    stack_failure_seconds, then ROLLBACK_COMPLETE;
  an update is applied by moto, UPDATE_IN_PROGRESS for stack_operation_seconds,
    then UPDATE_ROLLBACK_IN_PROGRESS (a resource UPDATE_FAILED event with the
    reason, on the first resource the update adds or modifies, else the first
    one) for stack_failure_seconds, then UPDATE_ROLLBACK_COMPLETE: moto
    re-applies the previous template and parameters to the resources, and the
    stack has its previous template, parameters, outputs and tags again.
  a deletion (only a `stack_failures` rule that names DeleteStack fails one)
    is DELETE_IN_PROGRESS for stack_operation_seconds, then DELETE_FAILED: the
    stack's first resource still there (template order) gets a DELETE_FAILED
    event with the reason, the stack a DELETE_FAILED event and StackStatusReason
    "The following resource(s) failed to delete: [<logical id>]. "; moto
    deletes every other resource, and the stack stays (DescribeStacks by name
    shows it). A stack with no resources left (ROLLBACK_COMPLETE) never fails.
    Another DeleteStack without RetainResources fails again for as long as the
    rule matches (the resource's failure does not go away by itself; a rule's
    `times` limits it). A DeleteStack with RetainResources naming exactly the
    resource that failed (anything else: ValidationError "The specified
    resources to retain must be in a valid state. ...") never fails: the
    resource gets a DELETE_SKIPPED event and outlives the stack, which goes
    DELETE_IN_PROGRESS, then DELETE_COMPLETE. RetainResources on a stack that
    is not DELETE_FAILED: ValidationError "Invalid operation on stack [<id>].
    RetainResources can only be specified when the stack is in the
    DELETE_FAILED state." (the simulator's wording, not AWS's verified one).
  The change set executed, if any, is EXECUTE_IN_PROGRESS meanwhile, then
  EXECUTE_FAILED (else EXECUTE_COMPLETE).

Change sets. moto 5.2.5 implements CreateChangeSet (ChangeSetType CREATE and
UPDATE), DescribeChangeSet, ExecuteChangeSet, DeleteChangeSet and
ListChangeSets; the layer fills some gaps. What the simulator's change sets show:
  Changes: a Resource change per changed resource, comparing the stack's
    current template resources (none for a CREATE change set) with the change
    set's: Action Add (a new logical id), Remove (one that is gone) or Modify
    (its JSON differs, or it Refs / ${}-substitutes a parameter whose value
    changes: moto missed those), with LogicalResourceId, ResourceType, and
    PhysicalResourceId where moto has one. A Modify also has Scope (the
    top-level attributes that differ: Properties, Metadata, DependsOn, ...;
    Properties when only a parameter changes) and Replacement: "True" if the
    resource Type changed, else always "Conditional" (the simulator does not
    know which properties force a replacement). Never shown: Details,
    Replacement "False", changes of stack tags alone (no resource change),
    nested stacks, imports, drift.
  A change set without any change is FAILED / UNAVAILABLE with AWS's reason
    (moto). Status is CREATE_COMPLETE at once (never CREATE_PENDING or
    CREATE_IN_PROGRESS); DescribeChangeSet's Tags are always empty (moto).
  ExecuteChangeSet: the stack goes through the states above; the change set's
    tags, parameters and outputs are applied (moto kept the old tags and lost
    the outputs); an unknown change set is ChangeSetNotFound (moto: HTTP 500),
    one not AVAILABLE (executed, failed) is InvalidChangeSetStatus. Other
    change sets of the stack are not marked OBSOLETE.
  DescribeChangeSet / DeleteChangeSet: a name is looked up within StackName
    (moto ignored it); an unknown one is ChangeSetNotFound.
  ListChangeSets lists only StackName's change sets (moto listed all).
  moto cannot apply a change of a resource's Type (ExecuteChangeSet or
    UpdateStack answer HTTP 500); describing such a change set works.

Account Management (service "account", REST-JSON: POST /putAlternateContact,
/getAlternateContact, /deleteAlternateContact, /putAccountName,
/getAccountInformation). moto 5.2.5 keeps alternate contacts (Put/Get/Delete;
an invalid AlternateContactType is its AccessDeniedException, as on AWS) but
checks nothing else and has no PutAccountName / GetAccountInformation. The
layer adds, for every one of these calls:
  without AccountId: the caller's own account (management or member).
  with AccountId: only the management account of an organization may name a
    member account: from any other caller AccessDeniedException; naming itself
    ValidationException (AWS: the management account can't specify its own
    AccountId); if trusted access for account.amazonaws.com was not enabled
    with organizations:EnableAWSServiceAccess (moto's record, see
    ListAWSServiceAccessForOrganization) AccessDeniedException "... trusted
    access ... is not enabled ..."; an account that is not in the organization
    (or still being created) ResourceNotFoundException. Delegated
    administrators are not simulated (moto cannot register one for
    account.amazonaws.com).
  Get/DeleteAlternateContact of a contact that is not set:
    ResourceNotFoundException, HTTP 404 (moto: HTTP 400 on get, success on delete).
  PutAccountName (1 to 50 characters of [ -;=?-~], else ValidationException)
    renames the account in Organizations: DescribeAccount, ListAccounts and
    ListAccountsForParent show the new name. GetAccountInformation answers
    AccountId, AccountName, AccountCreatedDate and AccountState (ACTIVE, or
    SUSPENDED once Organizations says PENDING_CLOSURE or SUSPENDED); for an
    account in no organization only AccountId and the name it was given.

Service control policies. moto 5.2.5 implements CreatePolicy, AttachPolicy,
DetachPolicy, ListPoliciesForTarget and EnablePolicyType. It attaches the
AWS-managed FullAWSAccess SCP to the root, the management account and every
account and OU it creates, from CreateOrganization on, whether or not the
SERVICE_CONTROL_POLICY type is enabled on the root (it never checks that:
no PolicyTypeNotEnabledException). The layer adds AWS's limit of 5 SCPs on
one target (root, OU or account), FullAWSAccess included: attaching a 6th is
ConstraintViolationException with Reason
MAX_POLICY_TYPE_ATTACHMENT_LIMIT_EXCEEDED (AWS's reason for "too many policies
of a type on one entity"; POLICY_NUMBER_LIMIT_EXCEEDED is its reason for the
organization-wide number of policies, not simulated); attaching a policy
already attached is
DuplicatePolicyAttachmentException (moto accepted it silently).

Roles and AssumeRole. moto 5.2.5 lets any caller assume any role ARN in any
account, whether the role exists or not, and evaluates no policy. With
`enforce_trust_policies` (the default) the layer answers AssumeRole with
AccessDenied, HTTP 403 ("User: <caller ARN> is not authorized to perform:
sts:AssumeRole on resource: <role ARN>", counted in assume_role_denied) unless:
  the role exists in moto's IAM of the account the RoleArn names, and RoleArn is
    its ARN (its path included);
  its trust policy (AssumeRolePolicyDocument) has an Allow statement for
    sts:AssumeRole (sts:*, *, any matching wildcard) whose Principal names the
    caller: "*" or {"AWS": "*"}, the caller's account (its id or
    arn:aws:iam::<id>:root: anyone in it, as IAM policies of the caller are not
    evaluated), or the caller's ARN (an IAM user's; for a role session the
    role's ARN or the session's assumed-role ARN); lists name each;
  the statement's conditions hold: StringEquals / StringLike on sts:ExternalId
    (a request without an ExternalId fails them). Any other condition operator
    or key (IfExists and ForAnyValue forms included) is not evaluated: such a
    statement never allows, and such a Deny statement always denies;
  no Deny statement covers the request (Deny wins);
  when the request passes session tags (Tags.member.N) or TransitiveTagKeys,
    the trust policy allows sts:TagSession to the caller too, read the same way
    (an Allow statement for sts:TagSession, sts:*, * or a matching wildcard that
    names the caller and whose conditions hold; Deny wins). Otherwise the
    answer names sts:TagSession instead ("... is not authorized to perform:
    sts:TagSession on resource: <role ARN>", as AWS words it). The role
    CreateAccount makes allows sts:AssumeRole only: AssumeRole into it with
    session tags is refused, as on AWS.
The caller is the account moto acts as for the access key: plain credentials
such as "testing" are the management account (arn:aws:iam::<id>:user/moto),
not a role, so a role Silo assumes in the management account
(--management-role-arn) must be created with IAM CreateRole first. Not
simulated: the caller's identity policies, SCPs, permission boundaries and
session policies.
`enforce_trust_policies: false` brings moto's behaviour back; the timer
(`unassumable_roles_seconds`) applies either way, before the trust policy.
Every account CreateAccount makes (moto 5.2.5 makes the role; the layer adds
its permissions) has the role named by RoleName (default
OrganizationAccountAccessRole) trusting the management account
(arn:aws:iam::<management>:root, sts:AssumeRole) and giving administrator
permissions, as AWS documents it: here an inline policy AdministratorAccess
(Allow * on *).

Large organizations. moto 5.2.5 slowed every request down in proportion to the
number of accounts (about 180 ms per request at 6,000); the layer patches the
hot spots at start-up (see "moto speed-ups" below) and keeps most of its own
per-request work independent of the number of accounts. scale_check.py (not
run by pytest) creates 6,000 accounts and times the calls Silo makes. Still
proportional: ListChildren (moto returns every child in one answer, ~30 ms at
6,000 accounts), ListCreateAccountStatus (5-15 ms at 6,000), DescribeAccount-
style lookups (a scan, well under 1 ms).

Run: python silo_awssim.py --host 127.0.0.1 --port PORT  (PORT 0 picks one).
It prints "silo-awssim listening on http://HOST:PORT" once it accepts requests.
"""

from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import functools
import io
import itertools
import json
import logging
import math
import os
import random
import re
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs, parse_qsl
from xml.sax.saxutils import escape

from moto.core.utils import utcnow as moto_utcnow
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

PARTITION = "aws"
ORG_JSON = "application/x-amz-json-1.1"
QUERY_XMLNS = {
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
    "cloudformation": "http://cloudformation.amazonaws.com/doc/2010-05-15/",
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "sns": "http://sns.amazonaws.com/doc/2010-03-31/",
}
ORG_THROTTLE_MESSAGE = (
    "AWS Organizations can't complete your request because another request is "
    "already in progress. Try again later."
)
RATE_LIMIT_SCOPES = ("global", "account", "account-region", "target-account")
STACK_OPERATIONS = ("CreateStack", "UpdateStack")   # what a stack_failures rule fails by default
FAILABLE_STACK_OPERATIONS = STACK_OPERATIONS + ("DeleteStack",)
ACCOUNT_PRINCIPAL = "account.amazonaws.com"
CONTACT_TYPES = ("BILLING", "OPERATIONS", "SECURITY")
SCP_ATTACHMENT_LIMIT = 5     # SCPs on one root, OU or account (AWS quota)
STACK_FAILURE_KEYS = {"operations", "account", "stack", "parameters", "reason", "times"}
DEFAULT_STACK_FAILURE = 'Resource handler returned message: "Simulated failure (silo-awssim)"'
STACK_OPS_LIMIT = 200_000    # stack operations kept for /_silo/stack_operations
UPDATABLE_STACK = ("CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE")
LOG_LIMIT = 200_000          # request-log entries kept
LOG_PAGE = 10_000            # default entries per GET /_silo/log
WRITE_SERVICES = ("organizations", "cloudformation", "account")
READ_PREFIXES = ("Describe", "List", "Get", "Validate", "Estimate")
ORG_SERVICE_MESSAGE = (
    "AWS Organizations can't complete your request because of an internal "
    "service error. Try again later."
)

# What the simulator does by default: as strict as AWS. Where AWS publishes a figure the
# default is that figure (the source is named); where it does not, the simulator's own
# choice is labelled so. Durations that take minutes on AWS are compressed to seconds so
# that a test can wait for them, but never 0: every state a caller can meet on AWS lasts
# long enough here to be met. docs/simulator-fidelity.md has the row for each.
DAY = 86_400.0
AWS_DEFAULT_ACCOUNT_LIMIT = 10              # Quotas for AWS Organizations: 10, adjustable
CLOSE_QUOTA_SHARE, CLOSE_QUOTA_MIN, CLOSE_QUOTA_MAX = 10, 10, 1000   # CloseAccount: "10% of
CLOSE_QUOTA_WINDOW_SECONDS = 30 * DAY       # member accounts, between 10 and 1000, within a
                                            # rolling 30 day period"
POST_CLOSURE_SECONDS = 90 * DAY             # Account Management: the 90-day post-closure period
DEFAULT_CREATION_SECONDS = 2.0              # AWS: minutes ("asynchronous"), compressed
DEFAULT_LISTING_LAG_SECONDS = 2.0           # AWS publishes no bound; the simulator's choice
DEFAULT_ROLE_PROPAGATION_SECONDS = 2.0      # AWS: "wait a few minutes", compressed
DEFAULT_CLOSE_PENDING_SECONDS = 30.0        # AWS: "a few minutes", compressed
DEFAULT_STACK_OPERATION_SECONDS = 1.0       # AWS: seconds to minutes per stack, compressed
# Request rates (token buckets). Account Management publishes its rates and bursts
# (Quotas for AWS Account Management); "per account" is the account the request names,
# "per caller account" the caller's. Organizations, STS and CloudFormation publish no
# rate: the simulator assumes Silo's own default budgets (--aws-requests-per-second 10,
# --sts-requests-per-second 20, --cloudformation-requests-per-second 5), metered the way
# AWS meters each service (Organizations per organization, i.e. per management account;
# STS and CloudFormation per account and Region), so that a Silo that exceeds its budget
# is throttled.
AWS_RATE_LIMITS: dict[str, float] = {
    "organizations:*": 10,
    "sts:*": 20,
    "cloudformation:*": 5,
    "account:GetAlternateContact": 10,
    "account:PutAlternateContact": 5,
    "account:DeleteAlternateContact": 1,
    "account:PutAccountName": 1,
    "account:GetAccountInformation": 3,
}
AWS_RATE_LIMIT_BURST: dict[str, float] = {
    "account:GetAlternateContact": 15,
    "account:PutAlternateContact": 8,
    "account:DeleteAlternateContact": 6,
    "account:PutAccountName": 1,
    "account:GetAccountInformation": 3,
}
AWS_RATE_LIMIT_SCOPE: dict[str, str] = {
    "organizations:*": "account",
    "sts:*": "account-region",
    "cloudformation:*": "account-region",
    "account:GetAlternateContact": "target-account",
    "account:PutAlternateContact": "target-account",
    "account:DeleteAlternateContact": "target-account",
    "account:PutAccountName": "account",
    "account:GetAccountInformation": "account",
}
# Requests signed with this access key are a test looking at the simulator, not a
# caller AWS would meter: no rate limit applies to them, and listings show them every
# account that exists, without the listing lag (they are still counted).
OBSERVER_ACCESS_KEY = "observer"

log = logging.getLogger("silo-awssim")


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

@dataclass
class Config:
    """Per-test fault configuration; POST /_silo/reset restores these defaults.

    create_account_delay_seconds  how long a CreateAccount stays IN_PROGRESS
    create_account_delays         {regex: seconds}: a CreateAccount whose Email
                                  matches (re.search, case-sensitive; use (?i))
                                  the first pattern in order uses that delay
                                  instead, for real and synthetic-failure creations
    unique_emails                 an email any account the simulator made since the
                                  last reset ever had (in any organization, closed
                                  or removed accounts included), or that an
                                  account of the caller's organization has, fails
                                  with EMAIL_ALREADY_EXISTS
    create_account_failures       [rule]: CreateAccount requests that fail, each
                                  {"reason": a FailureReason (INTERNAL_FAILURE,
                                   CONCURRENT_ACCOUNT_MODIFICATION,
                                   ACCOUNT_LIMIT_EXCEEDED, ...),
                                   "email": regex (re.search; default all),
                                   "times": n (the first n matching requests;
                                   null: every one)}; the first rule with
                                  requests left applies. The request makes no
                                  account, is IN_PROGRESS for its creation delay,
                                  then FAILED with that reason
    account_limit                 accounts (management included, permanently
                                  CLOSED ones not) in the org, else
                                  ACCOUNT_LIMIT_EXCEEDED; None = no limit.
                                  Default 10, AWS's default quota: a test of a
                                  larger fleet raises it, as its owner would
    max_concurrent_creations      creations IN_PROGRESS at once in one
                                  organization, else throttled
    list_accounts_lag_seconds     an account missing from ListAccounts,
                                  ListAccountsForParent and ListChildren for this
                                  long after it became ACTIVE (other calls see it);
                                  raising it does not hide accounts already listed
    rate_limits                   {op key: requests per second} token buckets;
                                  default AWS_RATE_LIMITS (AWS's published rates).
                                  Requests signed with OBSERVER_ACCESS_KEY (a
                                  test's own look at the simulator) never draw
                                  from a bucket
    rate_limit_burst              {op key: burst}: a bucket's size (default: the
                                  rate, at least 1); default AWS_RATE_LIMIT_BURST
    rate_limit_scope              {op key: "global" | "account" | "account-region"
                                  | "target-account"}: what one `rate_limits`
                                  bucket covers for the calls the key selects
                                  (most specific key wins; a key not listed is
                                  global: one bucket for every caller).
                                  "account": a bucket per caller account (the
                                  account moto acts as); "account-region": per
                                  account and credential-scope region, as AWS
                                  meters CloudFormation and STS; "target-account":
                                  per AccountId the request names (else the
                                  caller), as AWS meters the Account API's
                                  "per account" quotas; default AWS_RATE_LIMIT_SCOPE
    throttle_rate/_operations     probability of throttling the selected ops
    error_rate/error_operations   probability of a 5xx on the selected ops
    refusals                      {op key: {"code": str, "message": str,
                                  "status": int (400), "times": int | null}}:
                                  answer the selected operation with this AWS
                                  error (AccessDeniedException, say) the first
                                  `times` times (null: always); the request never
                                  reaches moto; counted in stats["refused"]
    latency_ms, latency_rate      delay before a request is processed
    response_delays_ms            {op key: ms}: hold the answer back this long
                                  AFTER moto processed the request
    close_pending_seconds         PENDING_CLOSURE time before SUSPENDED
    closed_after_seconds          SUSPENDED time before the account's State is
                                  CLOSED (AWS's 90-day post-closure period;
                                  Status stays SUSPENDED)
    close_quota                   CloseAccount calls that succeed in any rolling
                                  `close_quota_window_seconds`: "aws" (AWS's rule:
                                  10% of the organization's member accounts, at
                                  least 10 and at most 1,000), a number, or None
                                  (no quota); beyond it ConstraintViolationException
                                  CLOSE_ACCOUNT_QUOTA_EXCEEDED
    close_quota_window_seconds    the rolling window (AWS: 30 days)
    failing_stacks                {stack-name regex: failure reason}: CreateStack
                                  of a matching stack fails (see stack_failures)
    stack_failures                [rule]: stack operations that fail, each rule
                                  {"operations": ["CreateStack", "UpdateStack",
                                                  "DeleteStack"],
                                   "account": regex on the stack's account id,
                                   "stack": regex on the stack name,
                                   "parameters": {name: regex on the value},
                                   "reason": the failure message,
                                   "times": n}; every field is optional
                                  (operations: CreateStack and UpdateStack;
                                  DeleteStack only when named), all match
                                  fields given must match (re.search); a
                                  parameter matches on the value the operation
                                  would run with (passed, previous value, or
                                  the template default; for DeleteStack the
                                  stack's own; a parameter it does not have
                                  never matches). Executing a change set counts
                                  as CreateStack / UpdateStack by its type.
                                  reason defaults to a generic handler message.
                                  times: the rule fails at most n operations
                                  (every one it matched counts, since
                                  stack_failures was last set), then matches
                                  nothing; null or absent: no limit. A
                                  DeleteStack with RetainResources, or of a
                                  stack with no resources left, never fails.
    stack_operation_seconds       how long CreateStack, UpdateStack,
                                  ExecuteChangeSet and DeleteStack stay
                                  *_IN_PROGRESS
    drift_detection_seconds       how long DetectStackDrift stays
                                  DETECTION_IN_PROGRESS
    stack_operation_p99_seconds   null: every operation takes
                                  stack_operation_seconds; above it: each
                                  takes a draw from a lognormal distribution
                                  with stack_operation_seconds as its median
                                  and this as its 99th percentile (real stack
                                  operations are long-tailed), the same draws
                                  after every reset
    stack_failure_seconds         CREATE_FAILED time before ROLLBACK_COMPLETE,
                                  UPDATE_ROLLBACK_IN_PROGRESS time before
                                  UPDATE_ROLLBACK_COMPLETE
    unassumable_roles_seconds     AccessDenied on AssumeRole into a new account
    enforce_trust_policies        AssumeRole only into a role that exists in
                                  the target account's IAM and whose trust
                                  policy lets the caller in, with the external
                                  id it requires, and sts:TagSession too when
                                  the request passes session tags (see
                                  `trust_policy_allows`); false: any caller
                                  assumes any role ARN, as moto alone does
    """

    create_account_delay_seconds: float = DEFAULT_CREATION_SECONDS
    create_account_delays: dict[str, float] = field(default_factory=dict)
    unique_emails: bool = True
    create_account_failures: list[dict[str, Any]] = field(default_factory=list)
    account_limit: int | None = AWS_DEFAULT_ACCOUNT_LIMIT
    max_concurrent_creations: int | None = 5
    list_accounts_lag_seconds: float = DEFAULT_LISTING_LAG_SECONDS
    rate_limits: dict[str, float] = field(default_factory=lambda: dict(AWS_RATE_LIMITS))
    rate_limit_burst: dict[str, float] = field(default_factory=lambda: dict(AWS_RATE_LIMIT_BURST))
    rate_limit_scope: dict[str, str] = field(default_factory=lambda: dict(AWS_RATE_LIMIT_SCOPE))
    throttle_rate: float = 0.0
    throttle_operations: list[str] | None = None
    error_rate: float = 0.0
    error_operations: list[str] | None = None
    refusals: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency_ms: float = 0
    latency_rate: float = 0.0
    response_delays_ms: dict[str, float] = field(default_factory=dict)
    close_pending_seconds: float = DEFAULT_CLOSE_PENDING_SECONDS
    closed_after_seconds: float = POST_CLOSURE_SECONDS
    close_quota: int | str | None = "aws"
    close_quota_window_seconds: float = CLOSE_QUOTA_WINDOW_SECONDS
    failing_stacks: dict[str, str] = field(default_factory=dict)
    stack_failures: list[dict[str, Any]] = field(default_factory=list)
    stack_operation_seconds: float = DEFAULT_STACK_OPERATION_SECONDS
    stack_operation_p99_seconds: float | None = None
    drift_detection_seconds: float = 1
    stack_failure_seconds: float = 2
    unassumable_roles_seconds: float = DEFAULT_ROLE_PROPAGATION_SECONDS
    enforce_trust_policies: bool = True

    def merged(self, updates: Any) -> Config:
        """A copy with `updates` applied; ValueError says what is wrong."""
        if not isinstance(updates, dict):
            raise ValueError("config must be a JSON object")
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(updates) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {unknown}; known: {sorted(known)}")
        for key, value in updates.items():
            _validate(key, value)
        return dataclasses.replace(self, **updates)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


def _validate(key: str, value: Any) -> None:
    ok: bool
    if key == "unique_emails":
        ok = isinstance(value, bool)
    elif key == "enforce_trust_policies":
        ok = isinstance(value, bool)
    elif key in ("throttle_rate", "error_rate", "latency_rate"):
        ok = _number(value) and value <= 1
    elif key in ("account_limit", "max_concurrent_creations"):
        ok = value is None or (_number(value) and int(value) == value)
    elif key == "close_quota":
        ok = value is None or value == "aws" or (_number(value) and int(value) == value)
    elif key == "create_account_failures":
        ok = isinstance(value, list) and all(_creation_failure_rule_ok(r) for r in value)
    elif key in ("throttle_operations", "error_operations"):
        ok = value is None or (
            isinstance(value, list) and all(isinstance(v, str) for v in value))
    elif key == "refusals":
        ok = isinstance(value, dict) and all(
            isinstance(v, dict) and isinstance(v.get("code"), str)
            and set(v) <= {"code", "message", "status", "times"}
            and (v.get("times") is None or (_number(v["times"]) and int(v["times"]) == v["times"]))
            for v in value.values())
    elif key == "rate_limit_scope":
        ok = isinstance(value, dict) and all(
            v in RATE_LIMIT_SCOPES for v in value.values())
    elif key in ("rate_limits", "rate_limit_burst", "response_delays_ms"):
        ok = isinstance(value, dict) and all(_number(v) for v in value.values())
    elif key == "failing_stacks":
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        _check_regexes(key, value if ok else {})
    elif key == "stack_failures":
        ok = isinstance(value, list) and all(_stack_failure_rule_ok(r) for r in value)
    elif key == "create_account_delays":
        ok = isinstance(value, dict) and all(_number(v) for v in value.values())
        _check_regexes(key, value if ok else {})
    else:
        ok = _number(value)
    if not ok:
        raise ValueError(f"bad value for {key}: {value!r}")


def _creation_failure_rule_ok(rule: Any) -> bool:
    """A `create_account_failures` rule: a reason, an optional email regex and count."""
    if not isinstance(rule, dict) or set(rule) - {"reason", "email", "times"}:
        return False
    times = rule.get("times")
    if not (isinstance(rule.get("reason"), str) and rule["reason"]
            and isinstance(rule.get("email", ""), str)
            and (times is None or (_number(times) and int(times) == times))):
        return False
    _check_regexes("create_account_failures", {rule.get("email", ""): None})
    return True


def _stack_failure_rule_ok(rule: Any) -> bool:
    """A `stack_failures` rule: known keys, known operations, valid regexes."""
    if not isinstance(rule, dict) or set(rule) - STACK_FAILURE_KEYS:
        return False
    ops = rule.get("operations", list(STACK_OPERATIONS))
    params = rule.get("parameters", {})
    patterns = [rule.get("account", ""), rule.get("stack", "")]
    times = rule.get("times")
    if not (isinstance(ops, list) and set(ops) <= set(FAILABLE_STACK_OPERATIONS)
            and (times is None or (_number(times) and int(times) == times))
            and isinstance(params, dict) and isinstance(rule.get("reason", ""), str)
            and all(isinstance(p, str) for p in patterns + list(params.values()))):
        return False
    _check_regexes("stack_failures", dict.fromkeys(patterns + list(params.values())))
    return True


def _check_regexes(key: str, patterns: dict[str, Any]) -> None:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{key}: bad regex {pattern!r}: {exc}")


def _most_specific(call: Call, table: dict[str, Any]) -> str | None:
    """The key of `table` that applies to the call: `service:Operation`, else
    `service:*`, else `*`; None if none is configured."""
    return next((k for k in (call.key, f"{call.service}:*", "*") if k in table), None)


def _matches(key: str, patterns: list[str] | None) -> bool:
    """True if `service:Operation` is selected by patterns (None = all;
    entries may be `service:Operation`, `service:*` or `*`)."""
    if patterns is None:
        return True
    service = key.split(":", 1)[0]
    return key in patterns or f"{service}:*" in patterns or "*" in patterns


# --------------------------------------------------------------------------
# Requests and responses
# --------------------------------------------------------------------------

@dataclass
class Call:
    """One AWS API call as the layer sees it."""

    environ: dict[str, Any]
    service: str          # credential-scope service, e.g. "organizations"
    operation: str        # e.g. "CreateAccount"
    params: dict[str, Any]
    protocol: str         # "json", "rest-json", "query" or "rest" (REST-XML)

    @property
    def key(self) -> str:
        return f"{self.service}:{self.operation}"

    @property
    def access_key(self) -> str:
        m = re.search(r"Credential=([^/]+)/", self.environ.get("HTTP_AUTHORIZATION", ""))
        return m.group(1) if m else ""

    @property
    def region(self) -> str:
        """The region of the SigV4 credential scope ("" if unsigned)."""
        m = re.search(r"Credential=[^/]+/[^/]+/([^/]+)/",
                      self.environ.get("HTTP_AUTHORIZATION", ""))
        return m.group(1) if m else ""

    @functools.cached_property
    def account(self) -> str:
        """The account moto will act as (moto maps access keys to accounts)."""
        if self.environ.get("HTTP_X_MOTO_ACCOUNT_ID"):
            return self.environ["HTTP_X_MOTO_ACCOUNT_ID"]
        from moto.iam.models import get_account_id_from

        return get_account_id_from(self.access_key)

    @property
    def is_write(self) -> bool:
        """A mutating Organizations, CloudFormation or Account Management call."""
        return self.service in WRITE_SERVICES and not self.operation.startswith(READ_PREFIXES)

    def param(self, name: str) -> str | None:
        value = self.params.get(name)
        return value if isinstance(value, str) and value else None


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    fault: str = ""         # "throttled" or "error": an injected fault, not a real answer

    def json(self) -> Any:
        return json.loads(self.body or b"{}")

    def with_json(self, payload: Any) -> Response:
        """This response with a rewritten JSON body."""
        headers = [(k, v) for k, v in self.headers if k.lower() != "content-length"]
        return Response(self.status, headers, json.dumps(payload).encode(), self.fault)


def _status_line(code: int) -> str:
    from http import HTTPStatus

    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Unknown"


def json_response(status: int, payload: Any, content_type: str = "application/json",
                  extra: list[tuple[str, str]] | None = None) -> Response:
    headers = [("Content-Type", content_type), ("x-amzn-RequestId", str(uuid.uuid4()))]
    return Response(status, headers + (extra or []), json.dumps(payload).encode())


def aws_error(call: Call, status: int, code: str, message: str,
              **fields: Any) -> Response:
    """An error in the shape the caller's protocol uses, so SDKs parse `code`."""
    request_id = str(uuid.uuid4())
    if call.protocol == "json":
        content_type = call.environ.get("CONTENT_TYPE") or ORG_JSON
        body = {"__type": code, "Message": message, **fields}
        return json_response(status, body, content_type,
                             [("x-amzn-ErrorType", code)])
    if call.protocol == "rest-json":
        return json_response(status, {"__type": code, "message": message, **fields},
                             extra=[("x-amzn-ErrorType", code)])
    kind = "Receiver" if status >= 500 else "Sender"
    error = (f"<Error><Type>{kind}</Type><Code>{escape(code)}</Code>"
             f"<Message>{escape(message)}</Message></Error>")
    if call.protocol == "query":
        xmlns = QUERY_XMLNS.get(call.service, f"https://{call.service}.amazonaws.com/doc/")
        xml = (f'<ErrorResponse xmlns="{xmlns}">{error}'
               f"<RequestId>{request_id}</RequestId></ErrorResponse>")
    else:  # REST-XML (S3 style)
        xml = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{escape(code)}</Code>'
               f"<Message>{escape(message)}</Message><RequestId>{request_id}</RequestId></Error>")
    headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
    return Response(status, headers, xml.encode())


def query_response(call: Call, result_xml: str) -> Response:
    """A query-protocol (XML) success answer to the call, as moto writes them."""
    request_id = str(uuid.uuid4())
    xmlns = QUERY_XMLNS.get(call.service, f"https://{call.service}.amazonaws.com/doc/")
    xml = (f'<{call.operation}Response xmlns="{xmlns}"><{call.operation}Result>'
           f"{result_xml}</{call.operation}Result><ResponseMetadata><RequestId>{request_id}"
           f"</RequestId></ResponseMetadata></{call.operation}Response>")
    return Response(200, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)],
                    xml.encode())


def empty_query_response(call: Call) -> Response:
    """A query-protocol success answer without a result (DeleteStack), as moto writes it."""
    request_id = str(uuid.uuid4())
    xmlns = QUERY_XMLNS.get(call.service, f"https://{call.service}.amazonaws.com/doc/")
    xml = (f'<{call.operation}Response xmlns="{xmlns}"><ResponseMetadata><RequestId>'
           f"{request_id}</RequestId></ResponseMetadata></{call.operation}Response>")
    return Response(200, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)],
                    xml.encode())


def throttling_error(call: Call) -> Response:
    """What AWS answers when a caller exceeds a request rate."""
    if call.service == "organizations":
        resp = aws_error(call, 400, "TooManyRequestsException", ORG_THROTTLE_MESSAGE,
                         Type="TOO_MANY_REQUESTS")
    elif call.protocol == "rest-json":
        resp = aws_error(call, 429, "TooManyRequestsException", "Rate exceeded")
    elif call.protocol == "json":
        resp = aws_error(call, 400, "ThrottlingException", "Rate exceeded")
    elif call.protocol == "query":
        resp = aws_error(call, 400, "Throttling", "Rate exceeded")
    else:
        resp = aws_error(call, 503, "SlowDown", "Please reduce your request rate.")
    return dataclasses.replace(resp, fault="throttled")


def internal_error(call: Call) -> Response:
    """What AWS answers on an internal service failure (HTTP 500)."""
    if call.service == "organizations":
        resp = aws_error(call, 500, "ServiceException", ORG_SERVICE_MESSAGE)
    elif call.protocol == "rest-json":
        resp = aws_error(call, 500, "InternalServerException", "Internal server error.")
    elif call.protocol == "rest":
        resp = aws_error(call, 500, "InternalError", "We encountered an internal error.")
    else:
        resp = aws_error(call, 500, "InternalFailure",
                         "The request processing has failed because of an unknown error.")
    return dataclasses.replace(resp, fault="error")


# --------------------------------------------------------------------------
# Layer state
# --------------------------------------------------------------------------

@dataclass
class Creation:
    """A CreateAccount request: moto-made account, or a synthetic failure."""

    request_id: str
    name: str
    org_account: str            # management account of the organization
    requested_at: float         # wall clock, for timestamps
    ready_at: float             # monotonic: when it stops being IN_PROGRESS
    ready_wall: float
    account_id: str | None = None
    failure_reason: str | None = None

    def state(self, now: float) -> str:
        if now < self.ready_at:
            return "IN_PROGRESS"
        return "FAILED" if self.failure_reason else "SUCCEEDED"

    def status(self, now: float) -> dict[str, Any]:
        out = {"Id": self.request_id, "AccountName": self.name,
               "State": self.state(now), "RequestedTimestamp": self.requested_at}
        if out["State"] != "IN_PROGRESS":
            out["CompletedTimestamp"] = self.ready_wall
        if out["State"] == "SUCCEEDED":
            out["AccountId"] = self.account_id
        if out["State"] == "FAILED":
            out["FailureReason"] = self.failure_reason
        return out


@dataclass
class StackSnapshot:
    """What a rolled-back update gives a stack back."""

    template: Any
    template_dict: dict[str, Any]
    parameters: dict[str, Any]
    input_parameters: dict[str, Any]
    tags: dict[str, str]
    role_arn: str | None
    description: str | None

    @classmethod
    def of(cls, stack: Any) -> StackSnapshot:
        return cls(stack.template, copy.deepcopy(stack.template_dict), dict(stack.parameters),
                   dict(stack.resource_map.input_parameters), dict(stack.tags),
                   stack.role_arn, stack.description)


@dataclass
class StackOp:
    """One stack operation (GET /_silo/stack_operations) and the status
    changes still to come: `steps` are (monotonic due time, step name)."""

    account: str
    region: str
    stack_name: str
    stack_id: str
    operation: str
    started: float                       # wall clock
    stack: Any = None                    # the moto Stack
    steps: list[tuple[float, str]] = field(default_factory=list)
    finished: float | None = None
    result: str | None = None
    reason: str | None = None            # why it fails, if it does
    resource: tuple[str, str] = ("", "")  # (logical id, type) that fails
    snapshot: StackSnapshot | None = None
    change_set: Any = None               # the moto ChangeSet executed, if any
    outputs: Any = None                  # the OutputMap hidden while creating
    token: str | None = None             # its ClientRequestToken
    retain: tuple[str, ...] = ()         # a DeleteStack's RetainResources

    def public(self) -> dict[str, Any]:
        return {"account": self.account, "region": self.region,
                "stack_name": self.stack_name, "stack_id": self.stack_id,
                "operation": self.operation, "started": self.started,
                "finished": self.finished, "result": self.result}


@dataclass
class Bucket:
    tokens: float
    updated: float


@dataclass
class State:
    config: Config = field(default_factory=Config)
    creations: dict[str, Creation] = field(default_factory=dict)
    creation_of_account: dict[str, Creation] = field(default_factory=dict)
    # Creations that may still be IN_PROGRESS or unlisted (list_accounts_lag_seconds),
    # so that per-request checks do not walk every creation of a large organization.
    settling: list[Creation] = field(default_factory=list)
    # org account -> (moto's accounts list, length seen, last account seen, emails)
    email_index: dict[str, tuple[list[Any], int, Any, set[str]]] = field(default_factory=dict)
    closing: dict[str, tuple[Any, float]] = field(default_factory=dict)  # id -> (account, until)
    stack_ops: collections.deque[StackOp] = field(
        default_factory=lambda: collections.deque(maxlen=STACK_OPS_LIMIT))
    stacks_in_flight: list[StackOp] = field(default_factory=list)
    # (account, region, operation, stack name, ClientRequestToken) -> the operation
    stack_tokens: dict[tuple[str, str, str, str, str], StackOp] = field(default_factory=dict)
    # stack id -> (logical id, type) of the resource a DELETE_FAILED stack failed to delete
    delete_failed: dict[str, tuple[str, str]] = field(default_factory=dict)
    stack_failures_used: dict[int, int] = field(default_factory=dict)  # rule index -> matches
    # (account, region, stack name) -> logical id -> the drift a test made out of band
    # (POST /_silo/drift): {"status": MODIFIED|DELETED, "differences": [...]}.
    drifts: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    # detection id -> (account, region, stack id, started (monotonic), drifts it found)
    drift_detections: dict[str, tuple[str, str, str, float, dict[str, dict[str, Any]]]] = \
        field(default_factory=dict)
    # (account, region, stack name) -> the latest detection id
    last_drift_detection: dict[tuple[str, str, str], str] = field(default_factory=dict)
    # Draws of stack operation times (stack_operation_p99_seconds): seeded, so runs repeat.
    stack_random: random.Random = field(default_factory=lambda: random.Random(0))
    buckets: dict[str, Bucket] = field(default_factory=dict)
    refusals_used: dict[str, int] = field(default_factory=dict)
    creation_failures_used: dict[int, int] = field(default_factory=dict)  # rule index -> n
    # Lower-cased emails of every account made since the reset, in any organization.
    emails_taken: set[str] = field(default_factory=set)
    # management account -> when its organization closed accounts (monotonic): AWS's
    # closure quota is per organization.
    closes: dict[str, collections.deque[float]] = field(default_factory=dict)
    # id -> (account, when its State becomes CLOSED): SUSPENDED accounts still counting down.
    suspended: dict[str, tuple[Any, float]] = field(default_factory=dict)
    log: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=LOG_LIMIT))
    log_next: int = 0           # seq of the next log entry
    account_names: dict[str, str] = field(default_factory=dict)  # accounts in no org
    stats: dict[str, Any] = field(default_factory=lambda: {
        "requests": {}, "answered": {}, "throttled": {}, "injected_errors": {},
        "latency_injected": {}, "response_delayed": {}, "accounts_created": 0,
        "create_account_failures": {}, "accounts_closed": 0, "stacks_failed": 0,
        "assume_role_denied": 0, "sessions": [], "by_access_key": {},
        "writes_by_access_key": {}, "writes_by_session": {}, "refused": {},
    })
    # The role session name of each temporary access key AssumeRole handed out.
    session_of_key: dict[str, str] = field(default_factory=dict)

    def count(self, table: str, key: str) -> None:
        self.stats[table][key] = self.stats[table].get(key, 0) + 1

    def count_caller(self, call: Call) -> None:
        tables = ["by_access_key"] + (["writes_by_access_key"] if call.is_write else [])
        for table in tables:
            per_key = self.stats[table].setdefault(call.access_key, {})
            per_key[call.key] = per_key.get(call.key, 0) + 1
        session = self.session_of_key.get(call.access_key)
        if call.is_write and session is not None:
            per_session = self.stats["writes_by_session"].setdefault(session, {})
            per_session[call.key] = per_session.get(call.key, 0) + 1


def reset_moto() -> None:
    """Same as moto's POST /moto-api/reset, plus the member->management map
    that moto's reset keeps."""
    from moto.moto_api._internal.models import moto_api_backend
    from moto.organizations.models import organizations_backends

    moto_api_backend.reset()
    organizations_backends.master_accounts.clear()


def org_backend(account: str) -> Any:
    from moto.organizations.models import organizations_backends

    return organizations_backends[account][PARTITION]


def org_account(account_id: str) -> Any:
    """Organizations' record (moto FakeAccount) of an account, None if it is
    in no organization."""
    from moto.organizations.models import organizations_backends

    backend = org_backend(account_id)
    if backend.org is None:
        master = organizations_backends.master_accounts.get(account_id)
        if master is None:
            return None
        backend = organizations_backends[master[0]][master[1]]
    return next((a for a in backend.accounts if a.id == account_id), None)


# --------------------------------------------------------------------------
# CloudFormation helpers (moto objects; callers hold moto_lock)
# --------------------------------------------------------------------------

RESOURCE_ATTRIBUTES = ("Properties", "Metadata", "CreationPolicy", "UpdatePolicy",
                       "DeletionPolicy", "UpdateReplacePolicy", "DependsOn", "Condition")


def _stack_by_id(stack_id: str) -> Any:
    from moto.cloudformation.models import cloudformation_backends

    _, _, _, region, account, _ = stack_id.split(":", 5)
    return cloudformation_backends[account][region].stacks.get(stack_id)


def _stack_account(stack: Any) -> str:
    return stack.stack_id.split(":")[4]


def _member_list(params: dict[str, Any], name: str) -> list[dict[str, str]]:
    """A query-protocol list of structures (Name.member.N.Field) as dicts."""
    items: dict[int, dict[str, str]] = {}
    for key, value in params.items():
        m = re.fullmatch(rf"{name}\.member\.(\d+)\.(\w+)", key)
        if m:
            items.setdefault(int(m.group(1)), {})[m.group(2)] = value
    return [items[i] for i in sorted(items)]


def _string_list(params: dict[str, Any], name: str) -> list[str]:
    """A query-protocol list of strings (Name.member.N), in order."""
    items = {int(m.group(1)): value for key, value in params.items()
             if (m := re.fullmatch(rf"{name}\.member\.(\d+)", key))}
    return [items[i] for i in sorted(items)]


def _parse_template(body: Any) -> dict[str, Any]:
    from moto.cloudformation.models import Stack

    try:
        parsed = Stack.parse_template(body) if isinstance(body, str) else body
    except Exception:  # noqa: BLE001 - moto will say what is wrong with it
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _template_defaults(template: dict[str, Any]) -> dict[str, Any]:
    slots = template.get("Parameters") or {}
    return {k: v["Default"] for k, v in slots.items() if isinstance(v, dict) and "Default" in v}


def resolved_parameters(call: Call, stack: Any) -> dict[str, Any]:
    """The parameter values a CreateStack / UpdateStack would run with: the
    template's defaults, the values passed, previous values (UsePreviousValue)."""
    if stack is not None and call.param("UsePreviousTemplate") == "true":
        template = stack.template_dict
    else:
        template = _parse_template(call.param("TemplateBody") or "")
    values = _template_defaults(template)
    for p in _member_list(call.params, "Parameters"):
        key = p.get("ParameterKey", "")
        if p.get("UsePreviousValue") == "true" and stack is not None:
            values[key] = stack.resource_map.resolved_parameters.get(key)
        elif "ParameterValue" in p:
            values[key] = p["ParameterValue"]
    return values


def with_params(call: Call, **overrides: str) -> dict[str, Any]:
    """The call's WSGI environ with some query-protocol parameters replaced."""
    from urllib.parse import urlencode

    body = urlencode({**call.params, **overrides}).encode()
    environ = dict(call.environ, CONTENT_LENGTH=str(len(body)),
                   CONTENT_TYPE="application/x-www-form-urlencoded")
    environ["wsgi.input"] = io.BytesIO(body)
    return environ


def not_updatable(call: Call, stack: Any) -> Response:
    return aws_error(call, 400, "ValidationError",
                     f"Stack:{stack.stack_id} is in {stack.status} state and can not be updated.")


def change_set_not_found(call: Call) -> Response:
    return aws_error(call, 404, "ChangeSetNotFound",
                     f"ChangeSet [{call.param('ChangeSetName') or ''}] does not exist")


def _no_outputs(stack: Any) -> Any:
    from moto.cloudformation.parsing import OutputMap

    return OutputMap(stack.resource_map, {"Outputs": {}}, stack.stack_id)


def _remove_stack_resources(stack: Any) -> None:
    """What a failed creation's rollback leaves: no resources, outputs or exports."""
    from moto.cloudformation.models import cloudformation_backends

    try:
        stack.resource_map.delete()
    except Exception as exc:  # noqa: BLE001 - best effort, like a rollback
        log.warning("rollback of %s left resources: %s", stack.name, exc)
    # moto maps resolve resources lazily: empty them so nothing comes back.
    stack.resource_map._resource_json_map = {}
    stack.output_map._output_json_map = {}
    _, _, _, region, account, _ = stack.stack_id.split(":", 5)
    exports = cloudformation_backends[account][region].exports
    for name in [n for n, e in exports.items() if e.exporting_stack_id == stack.stack_id]:
        del exports[name]


def _existing_resources(stack: Any) -> list[tuple[str, str]]:
    """(logical id, type) of the resources the stack has now (moto made
    them and nothing deleted them), in template order."""
    resource_map = stack.resource_map
    return [(logical_id, (resource or {}).get("Type", "AWS::CloudFormation::Stack"))
            for logical_id, resource in resource_map._resource_json_map.items()
            if resource_map._parsed_resources.get(logical_id) is not None]


def _delete_stack_resources(stack: Any, keep: set[str]) -> None:
    """moto deletes the stack's resources but `keep` (logical ids), which stay
    the stack's only resources (a DELETE_FAILED stack), or are retained (a
    deleted one: the caller forgets the stack)."""
    resource_map = stack.resource_map
    resources = resource_map._resource_json_map
    kept = {k: resource_map._parsed_resources.pop(k) for k in keep
            if k in resource_map._parsed_resources}
    resource_map._resource_json_map = {k: v for k, v in resources.items() if k not in keep}
    try:
        resource_map.delete()
    except Exception as exc:  # noqa: BLE001 - best effort, as moto's own delete_stack
        log.warning("deleting %s left resources: %s", stack.name, exc)
    resource_map._resource_json_map = {k: v for k, v in resources.items() if k in keep}
    resource_map._parsed_resources.update(kept)


def _forget_stack(stack: Any) -> None:
    """What moto's delete_stack does once the resources are gone: the stack
    moves to the deleted stacks (found by id only), its exports go."""
    from moto.cloudformation.models import cloudformation_backends

    _, _, _, region, account, _ = stack.stack_id.split(":", 5)
    backend = cloudformation_backends[account][region]
    stack.resource_map._resource_json_map = {}
    backend.stacks.pop(stack.stack_id, None)
    backend.deleted_stacks[stack.stack_id] = stack
    for name in [n for n, e in backend.exports.items() if e.exporting_stack_id == stack.stack_id]:
        del backend.exports[name]


def _restore_stack(stack: Any, snap: StackSnapshot) -> None:
    """Roll an update back: moto re-applies the previous template and
    parameters to the resources; the stack gets its previous metadata back."""
    try:
        stack.resource_map.update(copy.deepcopy(snap.template_dict), snap.input_parameters)
    except Exception as exc:  # noqa: BLE001 - best effort, like a rollback
        log.warning("rollback of %s's update left changes: %s", stack.name, exc)
    stack.resource_map.input_parameters = dict(snap.input_parameters)
    stack.template, stack.template_dict = snap.template, snap.template_dict
    stack.parameters, stack.tags = snap.parameters, snap.tags
    stack.role_arn, stack.description = snap.role_arn, snap.description
    stack.output_map = stack._create_output_map()


def _references(node: Any) -> set[str]:
    """Names a template fragment refers to: {"Ref": X} and ${X} in Fn::Sub."""
    if isinstance(node, list):
        return set().union(*(_references(n) for n in node))
    if not isinstance(node, dict):
        return set()
    found = set()
    for key, value in node.items():
        if key == "Ref" and isinstance(value, str):
            found.add(value)
        elif key == "Fn::Sub":
            text = value[0] if isinstance(value, list) and value else value
            if isinstance(text, str):
                found |= set(re.findall(r"\$\{([^!}][^}]*)\}", text))
        found |= _references(value)
    return found


def _resource_diff(old: dict[str, Any], new: dict[str, Any],
                   changed_params: set[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(action, logical id, details) per changed resource, new template's
    order first, then removals; details: Type, Scope, Replacement."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for logical_id, resource in new.items():
        before = old.get(logical_id)
        if before is None:
            out.append(("Add", logical_id, {"Type": resource.get("Type")}))
            continue
        scope = [a for a in RESOURCE_ATTRIBUTES if before.get(a) != resource.get(a)]
        if not scope and _references(resource) & changed_params:
            scope = ["Properties"]
        type_changed = before.get("Type") != resource.get("Type")
        if scope or type_changed:
            out.append(("Modify", logical_id, {
                "Type": resource.get("Type"), "Scope": scope,
                "Replacement": "True" if type_changed else "Conditional"}))
    out += [("Remove", logical_id, {"Type": resource.get("Type")})
            for logical_id, resource in old.items() if logical_id not in new]
    return out


def _first_changed_resource(old: dict[str, Any], new: dict[str, Any],
                            stack_name: str) -> tuple[str, str]:
    """(logical id, type) of the resource an update "fails" on."""
    resources = new.get("Resources") or {}
    diff = _resource_diff(old.get("Resources") or {}, resources, set())
    changed = [(lid, d["Type"]) for action, lid, d in diff if action != "Remove"]
    if changed:
        return changed[0]
    first = next(iter(resources), None)
    if first is None:
        return stack_name, "AWS::CloudFormation::Stack"
    return first, resources[first].get("Type", "AWS::CloudFormation::Stack")


def change_set_changes(change_set: Any) -> list[Any]:
    """The Changes of a change set, as moto Change objects with the extra
    attributes moto's serializer picks up (Replacement, Scope, PhysicalResourceId)."""
    from moto.cloudformation.models import Change

    stack = change_set.stack
    creating = change_set.change_set_type == "CREATE"
    old = {} if creating else (stack.template_dict.get("Resources") or {})
    old_params = {} if creating else dict(stack.resource_map.resolved_parameters)
    new_params = {**_template_defaults(change_set.template_dict), **change_set.parameters}
    changed = {k for k in set(old_params) | set(new_params)
               if str(old_params.get(k)) != str(new_params.get(k))}
    changes = []
    for action, logical_id, details in _resource_diff(
            old, change_set.template_dict.get("Resources") or {}, changed):
        change = Change(action, logical_id, details["Type"])
        if action == "Modify":
            change.replacement, change.scope = details["Replacement"], details["Scope"]
        if action != "Add":
            resource = stack.resource_map._parsed_resources.get(logical_id)
            try:
                physical_id = getattr(resource, "physical_resource_id", None)
            except Exception:  # noqa: BLE001 - some moto models compute it lazily
                physical_id = None
            if isinstance(physical_id, str):
                change.physical_resource_id = physical_id
        changes.append(change)
    return changes


# --------------------------------------------------------------------------
# IAM trust policies (AssumeRole)
# --------------------------------------------------------------------------

ORG_ACCESS_ROLE = "OrganizationAccountAccessRole"   # CreateAccount's default RoleName
ADMINISTRATOR_ACCESS = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "*", "Resource": "*"}]})
TRUST_CONDITION_OPERATORS = ("StringEquals", "StringLike")


@dataclass(frozen=True)
class Caller:
    """Who calls AssumeRole: the account moto acts as for the access key and the ARNs a
    trust policy may name it by (an IAM user's ARN; for a role session the role's ARN
    and the session's, arn:aws:sts::<account>:assumed-role/<role>/<session>). `arn` is
    the one AWS names in an AccessDenied message; plain credentials moto holds no user
    for (such as "testing") are arn:aws:iam::<account>:user/moto."""

    account: str
    arns: frozenset[str]
    arn: str


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _wildcard(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM's * (any characters) and ? (one character) match of the whole value."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def _principal_matches(principal: Any, caller: Caller) -> bool:
    """`Principal` names the caller: "*", {"AWS": "*"}, its account (the id or
    arn:aws:iam::<id>:root: anyone in that account), or one of its ARNs; a list
    of them names each. Service and Federated principals never name an AWS caller."""
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    account_root = f"arn:{PARTITION}:iam::{caller.account}:root"
    return any(isinstance(p, str) and (p in ("*", caller.account, account_root) or p in caller.arns)
               for p in _listed(principal.get("AWS", [])))


def _conditions_hold(condition: Any, context: dict[str, str | None]) -> bool | None:
    """A statement's Condition: True if every test holds, False if one does not,
    None if the simulator cannot tell (an operator other than StringEquals or
    StringLike, a key other than sts:ExternalId, or a malformed block). Values of
    one key are alternatives; a key the request does not carry does not hold."""
    if condition is None:
        return True
    if not isinstance(condition, dict):
        return None
    unknown = False
    # Condition keys ignore case; the context holds them in lower case.
    for operator, tests in condition.items():
        if operator not in TRUST_CONDITION_OPERATORS or not isinstance(tests, dict):
            unknown = True
            continue
        for key, expected in tests.items():
            if not isinstance(key, str) or key.lower() not in context:
                unknown = True
                continue
            actual = context[key.lower()]
            values = [v if isinstance(v, str) else json.dumps(v) for v in _listed(expected)]
            if actual is None:
                return False
            if operator == "StringEquals":
                if actual not in values:
                    return False
            elif not any(_wildcard(v, actual) for v in values):
                return False
    return None if unknown else True


def _statement_applies(statement: dict[str, Any], action: str, caller: Caller,
                       context: dict[str, str | None]) -> bool | None:
    """Whether a trust policy statement covers this request (None: cannot tell)."""
    if "Principal" in statement:
        named = _principal_matches(statement["Principal"], caller)
    elif "NotPrincipal" in statement:
        named = not _principal_matches(statement["NotPrincipal"], caller)
    else:
        return False
    if "Action" in statement:
        acts = any(isinstance(a, str) and _wildcard(a, action, ignore_case=True)
                   for a in _listed(statement["Action"]))
    elif "NotAction" in statement:
        acts = not any(isinstance(a, str) and _wildcard(a, action, ignore_case=True)
                       for a in _listed(statement["NotAction"]))
    else:
        return False
    if not (named and acts):
        return False
    return _conditions_hold(statement.get("Condition"), context)


def trust_policy_allows(document: Any, caller: Caller, external_id: str | None,
                        action: str = "sts:AssumeRole") -> bool:
    """Whether a role's trust policy (AssumeRolePolicyDocument, JSON) lets `caller`
    perform `action` on the role with this ExternalId: sts:AssumeRole, or
    sts:TagSession (which AWS also requires when AssumeRole passes session tags).
    An Allow statement must name the caller (see `_principal_matches`) and the
    action (the action itself, sts:*, *, or another wildcard that matches;
    NotPrincipal and NotAction are read the AWS way), and its conditions must
    hold: StringEquals and StringLike on sts:ExternalId (a request without an
    ExternalId fails them). A Deny statement that covers the request wins over
    any Allow. Conservatively, a statement whose conditions the simulator
    cannot evaluate (any other operator or key, aws:RequestTag and aws:TagKeys,
    IfExists and ForAnyValue forms included) never allows, and a Deny one
    always denies. A document that is not JSON allows nothing. Identity
    policies of the caller, SCPs and permission boundaries are not evaluated."""
    try:
        policy = json.loads(document) if isinstance(document, str) else document
    except ValueError:
        return False
    statements = _listed(policy.get("Statement", [])) if isinstance(policy, dict) else []
    context: dict[str, str | None] = {"sts:externalid": external_id}
    allowed = False
    for statement in statements:
        if not isinstance(statement, dict):
            continue
        applies = _statement_applies(statement, action, caller, context)
        if statement.get("Effect") == "Deny" and applies is not False:
            return False
        if statement.get("Effect") == "Allow" and applies is True:
            allowed = True
    return allowed


def _iam_backend(account_id: str) -> Any:
    """moto's IAM backend of an account, None if moto has none (not created)."""
    from moto.iam.models import iam_backends

    partitions = dict.get(iam_backends, account_id)
    return dict.get(partitions, PARTITION) if partitions is not None else None


def create_access_role(account_id: str, role_name: str, management_account: str) -> None:
    """What Organizations' CreateAccount leaves in a new account: role `role_name`
    that the management account may assume (arn:aws:iam::<management>:root,
    sts:AssumeRole), with administrator permissions (an inline policy named
    AdministratorAccess, Allow * on *). moto 5.2.5 already makes the role with that
    trust policy (and honours RoleName) but with no permissions; this adds them, and
    the role if moto did not make it. Callers hold moto_lock."""
    from moto.iam.models import iam_backends

    iam = iam_backends[account_id][PARTITION]
    role = next((r for r in iam.roles.values() if r.name == role_name), None)
    if role is None:
        trust = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRole",
            "Principal": {"AWS": f"arn:{PARTITION}:iam::{management_account}:root"}}]})
        role = iam.create_role(role_name=role_name, assume_role_policy_document=trust, path="/",
                               permissions_boundary=None, description="", tags=[],
                               max_session_duration="3600")
    role.put_policy("AdministratorAccess", ADMINISTRATOR_ACCESS)


# --------------------------------------------------------------------------
# The middleware
# --------------------------------------------------------------------------

class SiloLayer:
    """WSGI middleware in front of moto's DomainDispatcherApplication."""

    def __init__(self, inner: Callable[..., Any]):
        self.inner = inner
        self.lock = threading.Lock()         # guards self.state
        # moto's backends are not thread-safe (CloudFormation parses templates and resolves
        # outputs lazily in shared objects): one request at a time reaches moto. Faults,
        # latency and held-back answers happen outside this lock.
        # Reentrant: a handler may hold it around forward() to read moto state, call
        # moto and fix up its answer as one step. Lock order: org_lock, moto_lock, lock.
        self.moto_lock = threading.RLock()
        self.org_lock = threading.Lock()     # serialises check+create / check+close
        self.random = random.Random()
        self.state = State()

    def reset(self) -> None:
        """Reset moto and every fault, counter and config key."""
        with self.org_lock, self.moto_lock, self.lock:
            reset_moto()
            self.state = State()

    # ---- WSGI entry -------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_silo/"):
            resp = self.admin(environ, path)
        else:
            body = self._buffer_body(environ)
            if path.startswith("/moto-api") or path == "/favicon.ico":
                if path.rstrip("/") == "/moto-api/reset" and environ["REQUEST_METHOD"] == "POST":
                    self.reset()
                    resp = json_response(200, {"status": "ok"})
                else:
                    resp = self.forward(environ)
            else:
                call, started = self._parse(environ, body), time.time()
                resp = self.handle(call)
                self.record(call, resp, started)
        headers = list(resp.headers)
        if not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("Content-Length", str(len(resp.body))))  # moto's stays (HEAD)
        start_response(_status_line(resp.status), headers)
        return [resp.body]

    @staticmethod
    def _buffer_body(environ: dict[str, Any]) -> bytes:
        """Read the whole body and hand moto a fresh stream of it."""
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        if length:
            body = stream.read(int(length))
        elif environ.get("wsgi.input_terminated"):
            body = stream.read()
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        else:
            body = b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return body

    @staticmethod
    def _parse(environ: dict[str, Any], body: bytes) -> Call:
        """Service from the SigV4 credential scope, operation from X-Amz-Target
        (JSON protocols) or the Action field (query protocol)."""
        m = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/",
                      environ.get("HTTP_AUTHORIZATION", ""))
        service = m.group(1).lower() if m else "unknown"
        target = environ.get("HTTP_X_AMZ_TARGET")
        rest_op = re.fullmatch(r"/([a-z][A-Za-z]+)", environ.get("PATH_INFO", ""))
        if service == "account" and rest_op and not target:
            # REST-JSON: POST /putAlternateContact -> PutAlternateContact
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                params = {}
            name = rest_op.group(1)
            return Call(environ, service, name[0].upper() + name[1:],
                        params if isinstance(params, dict) else {}, "rest-json")
        if target:
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                params = {}
            return Call(environ, service, target.rsplit(".", 1)[-1],
                        params if isinstance(params, dict) else {}, "json")
        form: dict[str, Any] = {}
        if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if not form.get("Action"):
            form.update(parse_qsl(environ.get("QUERY_STRING", "")))
        if form.get("Action"):
            return Call(environ, service, form["Action"], form, "query")
        return Call(environ, service, environ.get("REQUEST_METHOD", "GET"), form, "rest")

    def forward(self, environ: dict[str, Any]) -> Response:
        """Run the request through moto and capture its answer."""
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            captured["status"], captured["headers"] = int(status.split()[0]), headers
            return lambda data: None

        with self.moto_lock:
            result = self.inner(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        return Response(captured["status"], list(captured["headers"]), body)

    # ---- per-request pipeline ---------------------------------------------

    def handle(self, call: Call) -> Response:
        call.account    # noqa: B018 - resolve it (moto's key map) before taking locks
        self.advance_clock()
        with self.lock:
            state = self.state
            cfg = state.config
            state.count("requests", call.key)
            state.count_caller(call)
            delay = self.random.random() < cfg.latency_rate and cfg.latency_ms > 0
            if delay:
                state.count("latency_injected", call.key)
        if delay:
            time.sleep(cfg.latency_ms / 1000.0)   # never under the lock
        with self.lock:
            fault = self.rate_limited(call) or self.configured_refusal(call) or self.random_fault(call)
        if fault is not None:
            return fault
        handler = {
            "organizations:CreateAccount": self.create_account,
            "organizations:DescribeCreateAccountStatus": self.describe_create_account_status,
            "organizations:ListCreateAccountStatus": self.list_create_account_status,
            "organizations:CloseAccount": self.close_account,
            "cloudformation:CreateStack": self.create_stack,
            "cloudformation:UpdateStack": self.update_stack,
            "cloudformation:DeleteStack": self.delete_stack,
            "cloudformation:UpdateTerminationProtection": self.update_termination_protection,
            "cloudformation:CreateChangeSet": self.create_change_set,
            "cloudformation:ExecuteChangeSet": self.execute_change_set,
            "cloudformation:DescribeChangeSet": self.change_set_call,
            "cloudformation:DeleteChangeSet": self.change_set_call,
            "cloudformation:ListChangeSets": self.list_change_sets,
            "cloudformation:DetectStackDrift": self.detect_stack_drift,
            "cloudformation:DescribeStackDriftDetectionStatus": self.drift_detection_status,
            "cloudformation:DescribeStackResourceDrifts": self.stack_resource_drifts,
            "sts:AssumeRole": self.assume_role,
            "organizations:AttachPolicy": self.attach_policy,
            "account:PutAlternateContact": self.alternate_contact,
            "account:GetAlternateContact": self.alternate_contact,
            "account:DeleteAlternateContact": self.alternate_contact,
            "account:PutAccountName": self.put_account_name,
            "account:GetAccountInformation": self.get_account_information,
        }.get(call.key)
        if handler is None and call.service == "organizations":
            handler = self.hide_unready_accounts
        resp = handler(call) if handler else self.forward(call.environ)
        if resp.fault:
            return resp
        with self.lock:
            self.state.count("answered", call.key)
            hold_ms = self.response_delay_ms(call)
            if hold_ms > 0:
                self.state.count("response_delayed", call.key)
        if hold_ms > 0:
            time.sleep(hold_ms / 1000.0)   # never under the lock
        return resp

    def response_delay_ms(self, call: Call) -> float:
        """`response_delays_ms`: AWS acted, but its answer is slow to reach
        the caller (a long network path, a stalled connection), so a caller
        can time out or die after the change was made and never learn its
        result. Lock held; the most specific key applies."""
        delays = self.state.config.response_delays_ms
        key = _most_specific(call, delays)
        return float(delays[key]) if key is not None else 0.0

    def advance_clock(self) -> None:
        """Lazy time-based transitions, run before every request: closing
        accounts become SUSPENDED, stack operations take their next steps.
        Takes moto_lock then lock, and only when something is due."""
        now = time.monotonic()
        timers = (self.state.closing, self.state.suspended)
        with self.lock:
            due = any(until <= now for timer in timers for _, until in timer.values()) or any(
                op.steps[0][0] <= now for op in self.state.stacks_in_flight)
        if not due:
            return
        with self.moto_lock, self.lock:
            for account_id, (account, until) in list(self.state.closing.items()):
                if now >= until:
                    if account.status == "PENDING_CLOSURE":
                        account.status = account.state = "SUSPENDED"
                        self.state.suspended[account_id] = (
                            account, until + self.state.config.closed_after_seconds)
                    del self.state.closing[account_id]
            for account_id, (account, until) in list(self.state.suspended.items()):
                if now >= until:
                    if account.state == "SUSPENDED":
                        account.state = "CLOSED"     # Status has no CLOSED: it stays SUSPENDED
                    del self.state.suspended[account_id]
            for op in list(self.state.stacks_in_flight):
                self.run_steps(op, now)

    def rate_limited(self, call: Call) -> Response | None:
        """Per-key request-rate quotas (token bucket, burst = max(1, rate)) as
        AWS enforces them per account and API; the most specific configured
        key (`service:Operation`, `service:*`, `*`) applies."""
        limits = self.state.config.rate_limits
        key = _most_specific(call, limits)
        if key is None or call.access_key == OBSERVER_ACCESS_KEY:
            return None
        rate, now = float(limits[key]), time.monotonic()
        bursts = self.state.config.rate_limit_burst
        burst = max(1.0, float(bursts.get(key, rate)))
        bucket = self.state.buckets.setdefault(self.bucket_key(call, key), Bucket(burst, now))
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        self.state.count("throttled", call.key)
        return throttling_error(call)

    def bucket_key(self, call: Call, limit_key: str) -> str:
        """The bucket a call draws from for the `rate_limits` key `limit_key`:
        one for everyone, or one per caller account (and region), as
        `rate_limit_scope` says (lock held)."""
        scopes = self.state.config.rate_limit_scope
        scope_key = _most_specific(call, scopes)
        scope = scopes[scope_key] if scope_key is not None else "global"
        if scope == "account":
            return f"{limit_key}|{call.account}"
        if scope == "account-region":
            return f"{limit_key}|{call.account}|{call.region}"
        if scope == "target-account":
            return f"{limit_key}|{call.param('AccountId') or call.account}"
        return limit_key

    def configured_refusal(self, call: Call) -> Response | None:
        """`refusals`: the selected operation answers with the configured AWS
        error, a set number of times or always (lock held)."""
        refusals = self.state.config.refusals
        key = _most_specific(call, refusals)
        if key is None:
            return None
        rule = refusals[key]
        used = self.state.refusals_used.get(key, 0)
        if rule.get("times") is not None and used >= rule["times"]:
            return None
        self.state.refusals_used[key] = used + 1
        self.state.count("refused", call.key)
        return aws_error(call, int(rule.get("status", 400)), rule["code"],
                         rule.get("message", f"{call.operation} was refused by the simulator"))

    def random_fault(self, call: Call) -> Response | None:
        """Random throttling and internal errors, as any AWS API sometimes
        returns them; the request never reaches moto."""
        cfg = self.state.config
        if cfg.throttle_rate and _matches(call.key, cfg.throttle_operations) \
                and self.random.random() < cfg.throttle_rate:
            self.state.count("throttled", call.key)
            return throttling_error(call)
        if cfg.error_rate and _matches(call.key, cfg.error_operations) \
                and self.random.random() < cfg.error_rate:
            self.state.count("injected_errors", call.key)
            return internal_error(call)
        return None

    # ---- Organizations: account creation ----------------------------------

    def create_account(self, call: Call) -> Response:
        """CreateAccount is asynchronous on AWS: it answers IN_PROGRESS and the
        account appears minutes later. Failures (duplicate email, account
        quota) are only reported by DescribeCreateAccountStatus, and AWS
        throttles a caller with too many creations in flight. Every creation
        is recorded, instant ones included, for ListCreateAccountStatus and
        the listing lag. An account made gets the role RoleName (default
        OrganizationAccountAccessRole) that trusts the management account
        (`create_access_role`)."""
        backend = org_backend(call.account)
        if backend.org is None:
            return self.forward(call.environ)
        requested_at = time.time()
        with self.org_lock:
            with self.lock:
                cfg, now = self.state.config, time.monotonic()
                # AWS limits the creations in flight per organization.
                in_flight = sum(c.state(now) == "IN_PROGRESS" and c.org_account == backend.account_id
                                for c in self.settling(now))
                if cfg.max_concurrent_creations is not None \
                        and in_flight >= cfg.max_concurrent_creations:
                    self.state.count("throttled", call.key)
                    return throttling_error(call)
                reason = self.creation_failure(call, backend)
            if reason is None:
                resp = self.forward(call.environ)
                if resp.status != 200:
                    return resp
                status = resp.json()["CreateAccountStatus"]
                request_id, account_id = status["Id"], status["AccountId"]
                with self.moto_lock:
                    create_access_role(account_id, call.param("RoleName") or ORG_ACCESS_ROLE,
                                       backend.org.master_account_id)
            else:
                request_id, account_id = "car-" + uuid.uuid4().hex, None
            with self.lock:
                delay = self.creation_delay(call)
                creation = Creation(
                    request_id=request_id, name=call.params.get("AccountName", ""),
                    org_account=backend.account_id, requested_at=requested_at,
                    ready_at=time.monotonic() + delay, ready_wall=time.time() + delay,
                    account_id=account_id, failure_reason=reason)
                self.state.creations[request_id] = creation
                self.state.settling.append(creation)
                if account_id:
                    self.state.creation_of_account[account_id] = creation
                if reason is None:
                    self.state.stats["accounts_created"] += 1
                    self.state.emails_taken.add(str(call.params.get("Email", "")).lower())
                else:
                    self.state.count("create_account_failures", reason)
        if reason is None and delay <= 0:
            return resp        # moto's own immediate SUCCEEDED answer
        return json_response(200, {"CreateAccountStatus": creation.status(float("-inf"))},
                             ORG_JSON)   # as at request time: IN_PROGRESS

    def creation_delay(self, call: Call) -> float:
        """Account creation takes minutes on AWS, and not equally long for
        every request: the first `create_account_delays` pattern found in the
        Email picks the delay, else `create_account_delay_seconds` (lock held)."""
        cfg = self.state.config
        email = str(call.params.get("Email", ""))
        return next((float(seconds) for pattern, seconds in cfg.create_account_delays.items()
                     if re.search(pattern, email)), float(cfg.create_account_delay_seconds))

    def creation_failure(self, call: Call, backend: Any) -> str | None:
        """Why this creation fails, or None (lock held): an injected failure
        (`create_account_failures`), EMAIL_ALREADY_EXISTS (an email any account
        ever had: AWS accounts keep their email after they are closed or leave
        the organization), ACCOUNT_LIMIT_EXCEEDED."""
        cfg = self.state.config
        email = str(call.params.get("Email", ""))
        for index, rule in enumerate(cfg.create_account_failures):
            used = self.state.creation_failures_used.get(index, 0)
            if rule.get("times") is not None and used >= rule["times"]:
                continue
            if re.search(rule.get("email", ""), email):
                self.state.creation_failures_used[index] = used + 1
                return str(rule["reason"])
        if cfg.unique_emails and (email.lower() in self.state.emails_taken
                                  or email.lower() in self.org_emails(backend)):
            return "EMAIL_ALREADY_EXISTS"
        counted = sum(1 for a in backend.accounts if a.state != "CLOSED") \
            if cfg.account_limit is not None else 0
        if cfg.account_limit is not None and counted >= cfg.account_limit:
            return "ACCOUNT_LIMIT_EXCEEDED"
        return None

    def org_emails(self, backend: Any) -> set[str]:
        """The lower-cased emails of the organization's accounts (lock held),
        kept up to date as moto appends accounts instead of rebuilt per
        creation; rebuilt when the list changed otherwise (an account removed)."""
        accounts = backend.accounts
        cached = self.state.email_index.get(backend.account_id)
        if cached is not None and cached[0] is accounts and len(accounts) >= cached[1] \
                and (cached[1] == 0 or accounts[cached[1] - 1] is cached[2]):
            emails = cached[3]
            emails.update(a.email.lower() for a in accounts[cached[1]:])
        else:
            emails = {a.email.lower() for a in accounts}
        self.state.email_index[backend.account_id] = (
            accounts, len(accounts), accounts[-1] if accounts else None, emails)
        return emails

    def describe_create_account_status(self, call: Call) -> Response:
        """The status of a creation as time goes by: IN_PROGRESS without an
        AccountId, then SUCCEEDED or FAILED with a FailureReason. Every
        creation passes through this layer, so an unknown id is AWS's
        CreateAccountStatusNotFoundException (moto says AccountNotFound)."""
        with self.lock:
            creation = self.state.creations.get(call.params.get("CreateAccountRequestId", ""))
            status = creation.status(time.monotonic()) if creation else None
        if status is None:
            return aws_error(call, 400, "CreateAccountStatusNotFoundException",
                             "We can't find a create account request with the "
                             "CreateAccountRequestId that you specified.")
        return json_response(200, {"CreateAccountStatus": status}, ORG_JSON)

    def list_create_account_status(self, call: Call) -> Response:
        """Every creation request of the caller's organization (real ones,
        instant ones, synthetic failures) with its current state, oldest
        request first, filtered by States, MaxResults per page (AWS: at most
        20); NextToken is an offset."""
        backend = org_backend(call.account)
        if backend.org is None:
            return self.forward(call.environ)
        try:
            start = int(call.params.get("NextToken") or 0)
            size = int(call.params.get("MaxResults") or 20)
            if start < 0 or size < 1:
                raise ValueError
        except (TypeError, ValueError):
            return aws_error(call, 400, "InvalidInputException",
                             "You provided an invalid NextToken or MaxResults value.",
                             Reason="INVALID_NEXT_TOKEN")
        now = time.monotonic()
        states = call.params.get("States") or ["IN_PROGRESS", "SUCCEEDED", "FAILED"]
        with self.lock:
            ours = [c for c in self.state.creations.values()
                    if c.org_account == backend.account_id]
            known = self.state.creation_of_account
            # (requested at, Creation or moto account): statuses are built for one page.
            rows: list[tuple[float, Any]] = [(c.requested_at, c) for c in ours
                                             if c.state(now) in states]
            # Accounts moto made without this layer (none today) still get an entry.
            made = sum(1 for c in ours if c.account_id)
            if "SUCCEEDED" in states and len(backend.accounts) > made + 1:
                rows += [(a.create_account_status["CreateAccountStatus"]["RequestedTimestamp"], a)
                         for a in backend.accounts
                         if a.id != backend.org.master_account_id and a.id not in known]
            rows.sort(key=lambda row: row[0])
            page = [c.status(now) if isinstance(c, Creation)
                    else c.create_account_status["CreateAccountStatus"]
                    for _, c in rows[start:start + size]]
        out: dict[str, Any] = {"CreateAccountStatuses": page}
        if start + size < len(rows):
            out["NextToken"] = str(start + size)
        return json_response(200, out, ORG_JSON)

    def pending_accounts(self) -> set[str]:
        return self.unready_accounts()[0]

    def unready_accounts(self) -> tuple[set[str], set[str]]:
        """(pending, unlisted): accounts whose creation is IN_PROGRESS, and
        accounts ACTIVE for less than `list_accounts_lag_seconds`. Only
        created accounts have a creation record, so the management account
        is never in either."""
        now = time.monotonic()
        with self.lock:
            pending, unlisted = set(), set()
            for c in self.settling(now):
                if not c.account_id:
                    continue
                if c.state(now) == "IN_PROGRESS":
                    pending.add(c.account_id)
                else:
                    unlisted.add(c.account_id)
            return pending, unlisted

    def settling(self, now: float) -> list[Creation]:
        """Creations still IN_PROGRESS or unlisted (lock held). A creation
        leaves this list once listed; raising the lag later does not hide it
        again."""
        lag = self.state.config.list_accounts_lag_seconds
        self.state.settling = [c for c in self.state.settling
                               if now < c.ready_at + (lag if c.account_id else 0)]
        return self.state.settling

    def hide_unready_accounts(self, call: Call) -> Response:
        """An account whose creation is IN_PROGRESS does not exist yet: it is
        missing from listings and unknown to calls that name it (tags
        included). Organizations listings are also eventually consistent: an
        account that just became ACTIVE is missing from ListAccounts,
        ListAccountsForParent and ListChildren for `list_accounts_lag_seconds`
        while DescribeAccount, ListParents, ListTagsForResource etc. see it."""
        pending, unlisted = self.unready_accounts()
        if call.access_key == OBSERVER_ACCESS_KEY:
            unlisted = set()      # a test's look sees every account that exists
        if not pending and not unlisted:
            return self.forward(call.environ)
        if call.params.get("AccountId") in pending:
            return aws_error(call, 400, "AccountNotFoundException",
                             "You specified an account that doesn't exist.")
        if call.params.get("ChildId") in pending:
            return aws_error(call, 400, "ChildNotFoundException",
                             "You specified a child that doesn't exist.")
        if call.params.get("ResourceId") in pending:
            return aws_error(call, 400, "TargetNotFoundException",
                             "You specified a target that doesn't exist.")
        resp = self.forward(call.environ)
        list_key = {"ListAccounts": "Accounts", "ListAccountsForParent": "Accounts",
                    "ListChildren": "Children"}.get(call.operation)
        if resp.status != 200 or list_key is None:
            return resp
        hidden = pending | unlisted
        payload = resp.json()
        payload[list_key] = [a for a in payload.get(list_key) or [] if a["Id"] not in hidden]
        return resp.with_json(payload)

    # ---- Organizations: account closure -----------------------------------

    def close_account(self, call: Call) -> Response:
        """CloseAccount: the account stays PENDING_CLOSURE for a while before
        it is SUSPENDED, a second close is AccountAlreadyClosedException, and
        AWS allows only a few closures per period (CLOSE_ACCOUNT_QUOTA_EXCEEDED)."""
        account_id = call.params.get("AccountId", "")
        if account_id in self.pending_accounts():
            return aws_error(call, 400, "AccountNotFoundException",
                             "You specified an account that doesn't exist.")
        backend = org_backend(call.account)
        account = next((a for a in backend.accounts if a.id == account_id), None)
        with self.org_lock:
            if account is not None and account.status in ("PENDING_CLOSURE", "SUSPENDED"):
                return aws_error(call, 400, "AccountAlreadyClosedException",
                                 "The provided account is already closed.")
            with self.lock:
                quota = self.close_quota(backend)
                closes = self.state.closes.setdefault(backend.account_id, collections.deque())
                if quota is not None and len(closes) >= quota:
                    return aws_error(
                        call, 400, "ConstraintViolationException",
                        "You have exceeded close account quota for the past 30 days.",
                        Reason="CLOSE_ACCOUNT_QUOTA_EXCEEDED")
            resp = self.forward(call.environ)
            if resp.status != 200:
                return resp
            with self.lock:
                now = time.monotonic()
                self.state.closes.setdefault(backend.account_id, collections.deque()).append(now)
                self.state.stats["accounts_closed"] += 1
                pending = self.state.config.close_pending_seconds
                if account is not None and pending > 0:
                    account.status = account.state = "PENDING_CLOSURE"
                    self.state.closing[account_id] = (account, now + pending)
                elif account is not None:
                    self.state.suspended[account_id] = (
                        account, now + self.state.config.closed_after_seconds)
        return resp

    def close_quota(self, backend: Any) -> int | None:
        """How many closures the organization's rolling window holds in all,
        or None for no quota (lock held). AWS: "You can close only 10% of
        member accounts, between 10 and 1000, within a rolling 30 day period";
        permanently closed (CLOSED) accounts are no longer members."""
        cfg = self.state.config
        window_start = time.monotonic() - cfg.close_quota_window_seconds
        closes = self.state.closes.setdefault(backend.account_id, collections.deque())
        while closes and closes[0] <= window_start:
            closes.popleft()
        if cfg.close_quota != "aws":
            return None if cfg.close_quota is None else int(cfg.close_quota)
        members = sum(1 for a in backend.accounts
                      if a.id != backend.account_id and a.state != "CLOSED")
        return min(CLOSE_QUOTA_MAX, max(CLOSE_QUOTA_MIN, members * CLOSE_QUOTA_SHARE // 100))

    # ---- Organizations: service control policies ---------------------------

    def attach_policy(self, call: Call) -> Response:
        """AttachPolicy: at most SCP_ATTACHMENT_LIMIT SCPs on one root, OU or
        account (FullAWSAccess counts), and a policy attached twice is
        DuplicatePolicyAttachmentException; the rest is moto's."""
        backend = org_backend(call.account)
        with self.moto_lock:
            policy = next((p for p in backend.policies if p.id == call.param("PolicyId")), None)
            target_id = call.param("TargetId")
            target = next((t for t in itertools.chain(backend.ou, backend.accounts)
                           if t.id == target_id), None)
            if policy is not None and target is not None:
                if policy in target.attached_policies:
                    return aws_error(call, 400, "DuplicatePolicyAttachmentException",
                                     "The selected policy is already attached to the "
                                     "specified target.")
                same_type = sum(p.type == policy.type for p in target.attached_policies)
                if policy.type == "SERVICE_CONTROL_POLICY" and same_type >= SCP_ATTACHMENT_LIMIT:
                    return aws_error(
                        call, 400, "ConstraintViolationException",
                        "You have attached the maximum number of policies of this type "
                        "to the specified target.",
                        Reason="MAX_POLICY_TYPE_ATTACHMENT_LIMIT_EXCEEDED")
            return self.forward(call.environ)

    # ---- Account Management --------------------------------------------------

    def account_target(self, call: Call) -> tuple[str, Response | None]:
        """The account an Account Management call acts on, or the error AWS
        answers instead (see the module docstring)."""
        target = call.param("AccountId")
        if target is None:
            return call.account, None
        denied = (f"User: arn:aws:iam::{call.account}:user/moto is not authorized to perform: "
                  f"account:{call.operation} on resource: arn:aws:account::{call.account}"
                  f":account/{target}")
        backend = org_backend(call.account)
        if backend.org is None or backend.org.master_account_id != call.account:
            return target, aws_error(call, 403, "AccessDeniedException",
                                     f"{denied} (only the management account of the "
                                     "organization can specify an AccountId)")
        if target == call.account:
            return target, aws_error(call, 400, "ValidationException",
                                     "The management account can't specify its own AccountId; "
                                     "call the operation without AccountId.")
        if not any(s.get("ServicePrincipal") == ACCOUNT_PRINCIPAL for s in backend.services):
            return target, aws_error(call, 403, "AccessDeniedException",
                                     f"{denied} (trusted access for the AWS Account Management "
                                     f"service ({ACCOUNT_PRINCIPAL}) is not enabled in your "
                                     "organization)")
        if target in self.pending_accounts() or not any(a.id == target for a in backend.accounts):
            return target, aws_error(call, 404, "ResourceNotFoundException",
                                     f"The account {target} could not be found in your "
                                     "organization.")
        return target, None

    def alternate_contact(self, call: Call) -> Response:
        """Put/Get/DeleteAlternateContact: moto keeps the contacts; the layer
        checks who may act on which account, and answers a missing contact
        with AWS's 404 (moto: 400 on get, nothing on delete)."""
        target, error = self.account_target(call)
        if error is not None:
            return error
        from moto.account.models import account_backends

        with self.moto_lock:
            kind = call.param("AlternateContactType")
            if call.operation != "PutAlternateContact" and kind in CONTACT_TYPES \
                    and kind not in account_backends[target][PARTITION]._alternate_contacts:
                return aws_error(call, 404, "ResourceNotFoundException",
                                 "No contact of the inputted alternate contact type found.")
            return self.forward(call.environ)

    def put_account_name(self, call: Call) -> Response:
        """PutAccountName (moto lacks it): renames the account in
        Organizations, where it has one."""
        target, error = self.account_target(call)
        if error is not None:
            return error
        name = call.params.get("AccountName")
        if not isinstance(name, str) or not re.fullmatch(r"[ -;=?-~]{1,50}", name):
            return aws_error(call, 400, "ValidationException",
                             "1 validation error detected: Value at 'accountName' failed to "
                             "satisfy constraint: Member must have length between 1 and 50 "
                             "and match pattern [ -;=?-~]+")
        with self.moto_lock:
            account = org_account(target)
            if account is not None:
                account.name = name
            else:
                with self.lock:
                    self.state.account_names[target] = name
        return json_response(200, {})

    def get_account_information(self, call: Call) -> Response:
        """GetAccountInformation (moto lacks it), from Organizations' record."""
        target, error = self.account_target(call)
        if error is not None:
            return error
        from moto.core.utils import iso_8601_datetime_with_milliseconds

        out: dict[str, Any] = {"AccountId": target}
        with self.moto_lock:
            account = org_account(target)
            if account is not None:
                out.update(AccountName=account.name,
                           AccountCreatedDate=iso_8601_datetime_with_milliseconds(
                               account.create_time),
                           AccountState="SUSPENDED" if account.status in (
                               "PENDING_CLOSURE", "SUSPENDED") else "ACTIVE")
        with self.lock:
            if account is None and target in self.state.account_names:
                out["AccountName"] = self.state.account_names[target]
        return json_response(200, out)

    # ---- CloudFormation ----------------------------------------------------

    STEP_FROM = {   # the status a stack must still be in for a step to apply
        "create_complete": "CREATE_IN_PROGRESS",
        "create_failed": "CREATE_IN_PROGRESS",
        "rollback_complete": "CREATE_FAILED",
        "update_complete": "UPDATE_IN_PROGRESS",
        "update_failed": "UPDATE_IN_PROGRESS",
        "update_rollback_complete": "UPDATE_ROLLBACK_IN_PROGRESS",
        "delete_complete": "DELETE_IN_PROGRESS",
        "delete_failed": "DELETE_IN_PROGRESS",
    }

    def create_stack(self, call: Call) -> Response:
        """moto creates the stack at once; the layer reports it
        CREATE_IN_PROGRESS for `stack_operation_seconds`, or makes it fail
        (`failing_stacks`, `stack_failures`): see the module docstring."""
        name = call.param("StackName") or ""
        parameters = resolved_parameters(call, None)
        with self.moto_lock:
            with self.lock:
                retried = self.retried_stack_op(call, name)
                if retried is not None:
                    return retried
                reason = self.stack_failure("CreateStack", call.account, name, parameters)
            resp = self.forward(call.environ)
            m = re.search(rb"<StackId>([^<]+)</StackId>", resp.body)
            stack = _stack_by_id(m.group(1).decode()) if resp.status == 200 and m else None
            if stack is not None:
                with self.lock:
                    self.start_creation(stack, "CreateStack", reason, token=call.param(
                        "ClientRequestToken"))
        return resp

    def update_stack(self, call: Call) -> Response:
        """moto updates the stack at once; the layer reports it
        UPDATE_IN_PROGRESS for `stack_operation_seconds`, refuses to update a
        stack that is not in a stable state, or makes the update fail and roll
        back (`stack_failures`)."""
        with self.moto_lock:
            stack = self.find_stack(call, call.param("StackName"))
            if stack is None:
                return self.forward(call.environ)   # moto's "does not exist"
            with self.lock:
                retried = self.retried_stack_op(call, stack.name)
            if retried is not None:
                return retried
            if stack.status not in UPDATABLE_STACK:
                return not_updatable(call, stack)
            parameters = resolved_parameters(call, stack)
            snapshot = StackSnapshot.of(stack)
            with self.lock:
                reason = self.stack_failure("UpdateStack", _stack_account(stack),
                                            stack.name, parameters)
            resp = self.forward(call.environ)
            if resp.status == 200:
                with self.lock:
                    self.start_update(stack, "UpdateStack", reason, snapshot,
                                      token=call.param("ClientRequestToken"))
        return resp

    def delete_stack(self, call: Call) -> Response:
        """The layer deletes the stack over time (moto would at once): refused
        while termination protection is on, RetainResources refused outside
        DELETE_FAILED; DELETE_IN_PROGRESS for `stack_operation_seconds`, then
        DELETE_COMPLETE, or DELETE_FAILED (`stack_failures` naming
        DeleteStack). Any operation still in flight on the stack ends."""
        name = call.param("StackName") or ""
        retain = tuple(_string_list(call.params, "RetainResources"))
        with self.moto_lock:
            stack = self.find_stack(call, name)
            if stack is None or stack.status == "DELETE_COMPLETE":
                return self.forward(call.environ)   # moto: nothing to delete, success
            if stack.enable_termination_protection:
                return aws_error(call, 400, "ValidationError", f"Stack [{name}] cannot be "
                                 "deleted while TerminationProtection is enabled")
            if retain and stack.status != "DELETE_FAILED":
                return aws_error(call, 400, "ValidationError",
                                 f"Invalid operation on stack [{stack.stack_id}]. RetainResources "
                                 "can only be specified when the stack is in the DELETE_FAILED "
                                 "state.")
            if stack.status == "DELETE_IN_PROGRESS":
                return empty_query_response(call)   # accepted; nothing changes
            with self.lock:
                failed = self.state.delete_failed.get(stack.stack_id)
                if retain and (failed is None or set(retain) != {failed[0]}):
                    return aws_error(call, 400, "ValidationError",
                                     "The specified resources to retain must be in a valid "
                                     "state. Do not specify resources that are in the "
                                     "DELETE_COMPLETE state.")
                remaining = _existing_resources(stack)
                reason = None
                if remaining and not retain:
                    parameters = {**_template_defaults(stack.template_dict),
                                  **(stack.parameters or {})}
                    reason = self.stack_failure("DeleteStack", _stack_account(stack),
                                                stack.name, parameters)
                self.start_deletion(stack, reason, remaining[:1], retain)
        return empty_query_response(call)

    def update_termination_protection(self, call: Call) -> Response:
        """UpdateTerminationProtection (moto 5.2.5 lacks it): sets the flag
        moto keeps from CreateStack's EnableTerminationProtection, which
        DeleteStack honours. As on AWS, not on a stack that is
        DELETE_IN_PROGRESS or DELETE_COMPLETE."""
        name = call.param("StackName") or ""
        enable = (call.param("EnableTerminationProtection") or "").lower()
        if enable not in ("true", "false"):
            return aws_error(call, 400, "ValidationError",
                             "1 validation error detected: Value null at "
                             "'enableTerminationProtection' failed to satisfy constraint: "
                             "Member must not be null")
        with self.moto_lock:
            stack = self.find_stack(call, name)
            if stack is None:
                return aws_error(call, 400, "ValidationError",
                                 f"Stack with id {name} does not exist")
            if stack.status in ("DELETE_IN_PROGRESS", "DELETE_COMPLETE"):
                return aws_error(call, 400, "ValidationError",
                                 f"Stack:{stack.stack_id} is in {stack.status} state and its "
                                 "termination protection can not be updated.")
            stack.enable_termination_protection = enable == "true"
            return query_response(call, f"<StackId>{escape(stack.stack_id)}</StackId>")

    def create_change_set(self, call: Call) -> Response:
        """moto makes the change set; the layer replaces its Changes with its
        own comparison of the old and new template (see the module docstring).
        DeploymentMode REVERT_DRIFT (moto ignores it) is remembered: executing
        that change set puts the stack's drifted resources back."""
        revert = call.param("DeploymentMode") == "REVERT_DRIFT"
        with self.moto_lock:
            # moto refuses a change set with the stack's own content ("No updates"), which
            # is what a revert of drift is; as a CREATE change set it accepts it.
            resp = self.forward(with_params(call, ChangeSetType="CREATE") if revert else call.environ)
            m = re.search(rb"<Id>([^<]+)</Id>", resp.body)
            if resp.status == 200 and m:
                change_set = self.cfn_backend(call).change_sets.get(m.group(1).decode())
                if change_set is not None:
                    change_set.changes = change_set_changes(change_set)
                    change_set.silo_revert_drift = revert
        return resp

    def execute_change_set(self, call: Call) -> Response:
        """Executing a change set is a creation or an update of its stack, with
        the same timing and failure rules; the layer also applies what moto
        forgets (the change set's tags and parameters, the new outputs)."""
        with self.moto_lock:
            change_set = self.find_change_set(call)
            if change_set is None:
                return change_set_not_found(call)
            stack = change_set.stack
            if change_set.execution_status != "AVAILABLE":
                return aws_error(call, 400, "InvalidChangeSetStatus",
                                 f"ChangeSet [{change_set.change_set_id}] cannot be executed "
                                 f"in its current status of [{change_set.execution_status}]")
            creating = change_set.change_set_type == "CREATE"
            if not creating and stack.status not in UPDATABLE_STACK:
                return not_updatable(call, stack)
            parameters = {**_template_defaults(change_set.template_dict),
                          **change_set.parameters}
            snapshot = None if creating else StackSnapshot.of(stack)
            with self.lock:
                reason = self.stack_failure("CreateStack" if creating else "UpdateStack",
                                            _stack_account(stack), stack.name, parameters)
            if getattr(change_set, "silo_revert_drift", False):
                # Puts the drifted resources back and changes nothing else: moto is not
                # asked (it would make the resources again and fail on those that exist).
                with self.lock:
                    self.start_update(stack, "ExecuteChangeSet", reason, StackSnapshot.of(stack),
                                      change_set)
                    if reason is None:
                        key = (_stack_account(stack), call.region or "us-east-1", stack.name)
                        self.state.drifts.pop(key, None)
                return query_response(call, "")
            resp = self.forward(with_params(call, ChangeSetName=change_set.change_set_id))
            if resp.status != 200:
                return resp
            stack.template_dict = copy.deepcopy(change_set.template_dict)
            stack.description = stack.template_dict.get("Description")
            stack.parameters = dict(change_set.parameters)
            if change_set.tags:
                stack.tags = dict(change_set.tags)
            stack.output_map = stack._create_output_map()
            with self.lock:
                if creating:
                    self.start_creation(stack, "ExecuteChangeSet", reason, change_set)
                else:
                    self.start_update(stack, "ExecuteChangeSet", reason, snapshot, change_set)
        return resp

    # ---- drift ------------------------------------------------------------

    def detect_stack_drift(self, call: Call) -> Response:
        """DetectStackDrift (moto lacks it): a detection that is
        DETECTION_IN_PROGRESS for drift_detection_seconds, then reports the
        drift made with POST /_silo/drift as it was when detection started.
        As on AWS, not on a stack with an operation in progress."""
        name = call.param("StackName") or ""
        with self.moto_lock:
            stack = self.find_stack(call, name)
            if stack is None or stack.status == "DELETE_COMPLETE":
                return aws_error(call, 400, "ValidationError", f"Stack with id {name} does not exist")
            if stack.status.endswith("_IN_PROGRESS"):
                return aws_error(call, 400, "ValidationError",
                                 f"Drift detection is not supported for stack {stack.stack_id} "
                                 f"in {stack.status}")
            account, region = _stack_account(stack), call.region or "us-east-1"
            detection = str(uuid.uuid4())
            with self.lock:
                found = copy.deepcopy(self.state.drifts.get((account, region, stack.name), {}))
                self.state.drift_detections[detection] = (account, region, stack.stack_id,
                                                          time.monotonic(), found)
                self.state.last_drift_detection[(account, region, stack.name)] = detection
        return query_response(call, f"<StackDriftDetectionId>{detection}</StackDriftDetectionId>")

    def drift_detection_status(self, call: Call) -> Response:
        """DescribeStackDriftDetectionStatus of a detection this simulator started."""
        detection = call.param("StackDriftDetectionId") or ""
        with self.lock:
            found = self.state.drift_detections.get(detection)
            if found is None:
                return aws_error(call, 400, "ValidationError",
                                 f"Drift detection with id {detection} does not exist")
            _, _, stack_id, started, drifts = found
            done = time.monotonic() - started >= self.state.config.drift_detection_seconds
        status = "DETECTION_COMPLETE" if done else "DETECTION_IN_PROGRESS"
        xml = (f"<StackId>{escape(stack_id)}</StackId>"
               f"<StackDriftDetectionId>{detection}</StackDriftDetectionId>"
               f"<DetectionStatus>{status}</DetectionStatus><Timestamp>{moto_utcnow().isoformat()}Z</Timestamp>")
        if done:
            drift = "DRIFTED" if drifts else "IN_SYNC"
            xml += (f"<StackDriftStatus>{drift}</StackDriftStatus>"
                    f"<DriftedStackResourceCount>{len(drifts)}</DriftedStackResourceCount>")
        return query_response(call, xml)

    def stack_resource_drifts(self, call: Call) -> Response:
        """DescribeStackResourceDrifts: what the stack's latest completed
        detection found, filtered by StackResourceDriftStatusFilters; one
        page (the simulator's stacks are small)."""
        name = call.param("StackName") or ""
        wanted = {v for k, v in call.params.items()
                  if k.startswith("StackResourceDriftStatusFilters.member.")}
        with self.moto_lock:
            stack = self.find_stack(call, name)
            if stack is None:
                return aws_error(call, 400, "ValidationError", f"Stack with id {name} does not exist")
            resources = stack.template_dict.get("Resources") or {}
            key = (_stack_account(stack), call.region or "us-east-1", stack.name)
            with self.lock:
                detection = self.state.drift_detections.get(self.state.last_drift_detection.get(key, ""))
        drifts = detection[4] if detection else {}
        members = []
        for logical_id, drift in sorted(drifts.items()):
            if wanted and drift["status"] not in wanted:
                continue
            kind = (resources.get(logical_id) or {}).get("Type", "AWS::CloudFormation::CustomResource")
            differences = "".join(
                f"<member><PropertyPath>{escape(d.get('PropertyPath', ''))}</PropertyPath>"
                f"<ExpectedValue>{escape(str(d.get('ExpectedValue', '')))}</ExpectedValue>"
                f"<ActualValue>{escape(str(d.get('ActualValue', '')))}</ActualValue>"
                f"<DifferenceType>{escape(d.get('DifferenceType', 'NOT_EQUAL'))}</DifferenceType></member>"
                for d in drift.get("differences", []))
            members.append(
                f"<member><StackId>{escape(stack.stack_id)}</StackId>"
                f"<LogicalResourceId>{escape(logical_id)}</LogicalResourceId>"
                f"<PhysicalResourceId>{escape(logical_id)}</PhysicalResourceId>"
                f"<ResourceType>{escape(kind)}</ResourceType>"
                f"<StackResourceDriftStatus>{drift['status']}</StackResourceDriftStatus>"
                f"<PropertyDifferences>{differences}</PropertyDifferences>"
                f"<Timestamp>{moto_utcnow().isoformat()}Z</Timestamp></member>")
        return query_response(call, f"<StackResourceDrifts>{''.join(members)}</StackResourceDrifts>")

    def make_drift(self, body: dict[str, Any]) -> Response:
        """POST /_silo/drift: a resource of a stack changed out of band, as a
        person in the console would: {account, region, stack, resource,
        status: MODIFIED|DELETED|IN_SYNC, differences: [{PropertyPath,
        ExpectedValue, ActualValue, DifferenceType}]}. IN_SYNC undoes it."""
        try:
            key = (str(body["account"]), str(body.get("region") or "us-east-1"), str(body["stack"]))
            resource, status = str(body["resource"]), str(body.get("status") or "MODIFIED")
        except KeyError as exc:
            return json_response(400, {"error": f"missing {exc}"})
        if status not in ("MODIFIED", "DELETED", "IN_SYNC"):
            return json_response(400, {"error": f"status {status} is not MODIFIED, DELETED or IN_SYNC"})
        with self.lock:
            drifts = self.state.drifts.setdefault(key, {})
            if status == "IN_SYNC":
                drifts.pop(resource, None)
            else:
                drifts[resource] = {"status": status, "differences": list(body.get("differences") or [])}
            return json_response(200, {k: v for k, v in drifts.items()})

    def change_set_call(self, call: Call) -> Response:
        """DescribeChangeSet / DeleteChangeSet: the change set named within
        StackName (moto ignores StackName), ChangeSetNotFound if there is
        none (moto: a 500 on delete)."""
        with self.moto_lock:
            change_set = self.find_change_set(call)
            if change_set is None:
                return change_set_not_found(call)
            return self.forward(with_params(call, ChangeSetName=change_set.change_set_id))

    def list_change_sets(self, call: Call) -> Response:
        """ListChangeSets: only StackName's change sets (moto lists them all)."""
        resp = self.forward(call.environ)
        stack = call.param("StackName")
        if resp.status != 200 or not stack:
            return resp

        def keep(m: re.Match[bytes]) -> bytes:
            names = re.findall(rb"<Stack(?:Name|Id)>([^<]*)</Stack(?:Name|Id)>", m.group(0))
            return m.group(0) if stack.encode() in names else b""

        body = re.sub(rb"<member>.*?</member>", keep, resp.body, flags=re.S)
        headers = [(k, v) for k, v in resp.headers if k.lower() != "content-length"]
        return Response(resp.status, headers, body)

    def cfn_backend(self, call: Call) -> Any:
        from moto.cloudformation.models import cloudformation_backends

        return cloudformation_backends[call.account][call.region or "us-east-1"]

    def find_stack(self, call: Call, name: str | None) -> Any:
        """moto's stack by name or id, None if unknown (moto_lock held)."""
        try:
            return self.cfn_backend(call).get_stack(name) if name else None
        except Exception:  # noqa: BLE001 - moto's ValidationError: no such stack
            return None

    def find_change_set(self, call: Call) -> Any:
        """The change set ChangeSetName names: an ARN, or a name within
        StackName when given (moto_lock held); None if there is none."""
        backend = self.cfn_backend(call)
        name, stack = call.param("ChangeSetName") or "", call.param("StackName")
        if name in backend.change_sets:
            return backend.change_sets[name]
        found = [cs for cs in backend.change_sets.values() if cs.change_set_name == name
                 and (stack is None or stack in (cs.stack_name, cs.stack_id))]
        return found[-1] if found else None

    def retried_stack_op(self, call: Call, stack_name: str) -> Response | None:
        """The answer to a CreateStack / UpdateStack that repeats an earlier
        one's ClientRequestToken: that operation's StackId (lock held)."""
        token = call.param("ClientRequestToken")
        op = self.state.stack_tokens.get(
            (call.account, call.region, call.operation, stack_name, token or ""))
        if token is None or op is None or op.stack.status == "DELETE_COMPLETE":
            return None
        return query_response(call, f"<StackId>{escape(op.stack_id)}</StackId>")

    def stack_failure(self, operation: str, account: str, stack_name: str,
                      parameters: dict[str, Any]) -> str | None:
        """The reason the operation fails, from `failing_stacks` (CreateStack
        only) then `stack_failures`; None if it succeeds (lock held)."""
        cfg = self.state.config
        if operation == "CreateStack":
            reason = next((r for p, r in cfg.failing_stacks.items() if re.search(p, stack_name)),
                          None)
            if reason is not None:
                return reason
        for index, rule in enumerate(cfg.stack_failures):
            if operation not in rule.get("operations", STACK_OPERATIONS):
                continue
            if not re.search(rule.get("account", ""), account) \
                    or not re.search(rule.get("stack", ""), stack_name):
                continue
            if all(name in parameters and re.search(pattern, str(parameters[name]))
                   for name, pattern in rule.get("parameters", {}).items()):
                used = self.state.stack_failures_used.get(index, 0)
                if rule.get("times") is not None and used >= rule["times"]:
                    continue
                self.state.stack_failures_used[index] = used + 1
                return rule.get("reason", DEFAULT_STACK_FAILURE)
        return None

    # Stack operations over time. Everything below runs with moto_lock and lock held.

    def stack_op(self, stack: Any, operation: str, change_set: Any = None,
                 token: str | None = None) -> StackOp:
        _, _, _, region, account, _ = stack.stack_id.split(":", 5)
        op = StackOp(account, region, stack.name, stack.stack_id, operation, time.time(),
                     stack=stack, change_set=change_set, token=token)
        if token:
            self.state.stack_tokens[(account, region, operation, stack.name, token)] = op
        return op

    def stack_seconds(self) -> float:
        """How long one stack operation stays *_IN_PROGRESS (lock held)."""
        cfg = self.state.config
        median, p99 = cfg.stack_operation_seconds, cfg.stack_operation_p99_seconds
        if p99 is None or median <= 0 or p99 <= median:
            return median
        # The 99th percentile of a standard normal is 2.3263 standard deviations.
        sigma = math.log(p99 / median) / 2.3263
        return median * math.exp(self.state.stack_random.gauss(0.0, sigma))

    def start_creation(self, stack: Any, operation: str, reason: str | None,
                       change_set: Any = None, token: str | None = None) -> None:
        """A stack moto just created: CREATE_IN_PROGRESS without outputs, then
        CREATE_COMPLETE; or, if it fails, nothing it made remains, and it
        goes CREATE_FAILED, then ROLLBACK_COMPLETE."""
        cfg, now = self.state.config, time.monotonic()
        op = self.stack_op(stack, operation, change_set, token)
        stack.events = [e for e in stack.events if e.resource_status != "CREATE_COMPLETE"]
        stack.status = "CREATE_IN_PROGRESS"
        done = now + self.stack_seconds()
        if reason is None:
            op.outputs = stack.output_map
            stack.output_map = _no_outputs(stack)
            op.steps = [(done, "create_complete")]
        else:
            resources = stack.template_dict.get("Resources") or {}
            logical_id = next(iter(resources), stack.name)
            op.reason = reason
            op.resource = (logical_id, (resources.get(logical_id) or {}).get(
                "Type", "AWS::CloudFormation::Stack"))
            _remove_stack_resources(stack)
            op.steps = [(done, "create_failed"),
                        (done + cfg.stack_failure_seconds, "rollback_complete")]
            self.state.stats["stacks_failed"] += 1
        self.begin(op, now)

    def start_update(self, stack: Any, operation: str, reason: str | None,
                     snapshot: StackSnapshot, change_set: Any = None,
                     token: str | None = None) -> None:
        """A stack moto just updated: UPDATE_IN_PROGRESS, then UPDATE_COMPLETE;
        or, if it fails, UPDATE_ROLLBACK_IN_PROGRESS, then
        UPDATE_ROLLBACK_COMPLETE with the previous template, parameters,
        outputs and tags."""
        cfg, now = self.state.config, time.monotonic()
        op = self.stack_op(stack, operation, change_set, token)
        if stack.events and stack.events[-1].resource_status == "UPDATE_COMPLETE":
            stack.events.pop()
        stack.status = "UPDATE_IN_PROGRESS"
        stack.stack_status_reason = None
        # AWS reports when a stack last changed; moto only knows its creation.
        stack.last_updated_time = moto_utcnow()
        done = now + self.stack_seconds()
        if reason is None:
            op.steps = [(done, "update_complete")]
        else:
            op.reason, op.snapshot = reason, snapshot
            op.resource = _first_changed_resource(snapshot.template_dict, stack.template_dict,
                                                  stack.name)
            op.steps = [(done, "update_failed"),
                        (done + cfg.stack_failure_seconds, "update_rollback_complete")]
            self.state.stats["stacks_failed"] += 1
        self.begin(op, now)

    def start_deletion(self, stack: Any, reason: str | None, failing: list[tuple[str, str]],
                       retain: tuple[str, ...]) -> None:
        """DELETE_IN_PROGRESS, then DELETE_COMPLETE (moto deletes the
        resources, except those retained, and forgets the stack's name); or,
        if it fails, DELETE_FAILED on `failing`'s resource, the only one left.
        An operation in flight on the stack ends now, in DELETE_IN_PROGRESS."""
        cfg, now = self.state.config, time.monotonic()
        stack.status = "DELETE_IN_PROGRESS"
        stack.stack_status_reason = None
        for op in [o for o in self.state.stacks_in_flight if o.stack is stack]:
            self.finish(op, now)
        op = self.stack_op(stack, "DeleteStack")
        op.retain = retain
        _stack_event(stack, "DELETE_IN_PROGRESS", reason="User Initiated")
        done = now + self.stack_seconds()
        if reason is None:
            op.steps = [(done, "delete_complete")]
        else:
            op.reason, op.resource = reason, failing[0]
            op.steps = [(done, "delete_failed")]
            self.state.stats["stacks_failed"] += 1
        self.begin(op, now)

    def begin(self, op: StackOp, now: float) -> None:
        self.state.stack_ops.append(op)
        if op.change_set is not None:
            op.change_set.execution_status = "EXECUTE_IN_PROGRESS"
        if not op.steps:
            self.finish(op, now)
            return
        self.state.stacks_in_flight.append(op)
        self.run_steps(op, now)

    def run_steps(self, op: StackOp, now: float) -> None:
        """Take the steps that are due; a stack no longer in the status a step
        expects (deleted meanwhile) ends the operation there."""
        while op.steps and op.steps[0][0] <= now:
            due, step = op.steps.pop(0)
            if op.stack.status != self.STEP_FROM[step]:
                self.finish(op, due)
                return
            getattr(self, f"step_{step}")(op)
            if not op.steps:
                self.finish(op, due)

    def finish(self, op: StackOp, due: float) -> None:
        """The operation ended (due: monotonic) in the stack's current status."""
        op.steps = []
        op.finished = time.time() - (time.monotonic() - due)
        op.result = op.stack.status
        if op.change_set is not None:
            op.change_set.execution_status = "EXECUTE_FAILED" if op.reason else "EXECUTE_COMPLETE"
        if op in self.state.stacks_in_flight:
            self.state.stacks_in_flight.remove(op)

    def step_create_complete(self, op: StackOp) -> None:
        op.stack.output_map = op.outputs
        _stack_event(op.stack, "CREATE_COMPLETE")
        op.stack.status = "CREATE_COMPLETE"

    def step_create_failed(self, op: StackOp) -> None:
        _resource_failed(op, "create", "CREATE_FAILED")

    def step_rollback_complete(self, op: StackOp) -> None:
        logical_id, resource_type = op.resource
        _stack_event(op.stack, "DELETE_COMPLETE", logical_id, resource_type)
        _stack_event(op.stack, "ROLLBACK_COMPLETE")
        op.stack.status = "ROLLBACK_COMPLETE"

    def step_update_complete(self, op: StackOp) -> None:
        _stack_event(op.stack, "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
        _stack_event(op.stack, "UPDATE_COMPLETE")
        op.stack.status = "UPDATE_COMPLETE"

    def step_update_failed(self, op: StackOp) -> None:
        _resource_failed(op, "update", "UPDATE_ROLLBACK_IN_PROGRESS")

    def step_update_rollback_complete(self, op: StackOp) -> None:
        assert op.snapshot is not None
        _restore_stack(op.stack, op.snapshot)
        _stack_event(op.stack, "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS")
        _stack_event(op.stack, "UPDATE_ROLLBACK_COMPLETE")
        op.stack.status = "UPDATE_ROLLBACK_COMPLETE"

    def step_delete_complete(self, op: StackOp) -> None:
        stack = op.stack
        resources = stack.template_dict.get("Resources") or {}
        for logical_id in op.retain:
            resource_type = (resources.get(logical_id) or {}).get("Type", "")
            _stack_event(stack, "DELETE_SKIPPED", logical_id, resource_type)
        _delete_stack_resources(stack, keep=set(op.retain))
        _forget_stack(stack)
        _stack_event(stack, "DELETE_COMPLETE")
        stack.status = "DELETE_COMPLETE"
        self.state.delete_failed.pop(stack.stack_id, None)

    def step_delete_failed(self, op: StackOp) -> None:
        _delete_stack_resources(op.stack, keep={op.resource[0]})   # the others are gone, as on AWS
        _resource_failed(op, "delete", "DELETE_FAILED")
        self.state.delete_failed[op.stack.stack_id] = op.resource

    # ---- STS -----------------------------------------------------------------

    def assume_role(self, call: Call) -> Response:
        """AssumeRole as AWS refuses it, with AccessDenied (HTTP 403):
        - roles in a brand-new account cannot be assumed at once (IAM is
          eventually consistent): until the account is `unassumable_roles_seconds`
          old, counted from when it became ready (and while it is being created);
        - with `enforce_trust_policies` (default), the role must exist in the
          target account's IAM (RoleArn equal to its ARN) and its trust policy
          must let the caller in with the ExternalId given (`trust_policy_allows`),
          and allow it sts:TagSession too when the request passes session tags
          or TransitiveTagKeys (the refusal then names sts:TagSession).
        Every request is recorded in stats["sessions"] with why it was denied."""
        role_arn = call.params.get("RoleArn", "")
        parts = role_arn.split(":")
        target = parts[4] if len(parts) > 5 else ""
        session = self.record_session(call, role_arn)
        tagged = any(k.startswith(("Tags.member.", "TransitiveTagKeys.member."))
                     for k in call.params)
        with self.moto_lock:
            caller = self.caller(call)
            with self.lock:
                creation = self.state.creation_of_account.get(target)
                wait = self.state.config.unassumable_roles_seconds
                enforce = self.state.config.enforce_trust_policies
            denied = None
            if creation is not None and time.monotonic() < creation.ready_at + wait:
                denied = "unassumable"
            elif enforce:
                denied = self.trust_refusal(role_arn, target, caller, call.param("ExternalId"),
                                            tagged)
            with self.lock:
                session["denied"] = denied
                if denied:
                    self.state.stats["assume_role_denied"] += 1
            if not denied:
                resp = self.forward(call.environ)
                issued = re.search(rb"<AccessKeyId>([^<]+)</AccessKeyId>", resp.body or b"")
                if resp.status == 200 and issued:
                    with self.lock:
                        self.state.session_of_key[issued.group(1).decode()] = session["name"]
                return resp
        action = "sts:TagSession" if denied == "tag session" else "sts:AssumeRole"
        return aws_error(call, 403, "AccessDenied",
                         f"User: {caller.arn} is not authorized to perform: "
                         f"{action} on resource: {role_arn}")

    @staticmethod
    def trust_refusal(role_arn: str, target: str, caller: Caller,
                      external_id: str | None, tagged: bool = False) -> str | None:
        """Why the role refuses the caller ("no such role", "trust policy", or "tag
        session": it may assume the role but not pass session tags, `tagged`),
        None if it lets it in (moto_lock held)."""
        iam = _iam_backend(target) if re.fullmatch(r"\d{12}", target) else None
        role = next((r for r in list(iam.roles.values()) if r.arn == role_arn), None) \
            if iam is not None else None
        if role is None:
            return "no such role"
        if not trust_policy_allows(role.assume_role_policy_document, caller, external_id):
            return "trust policy"
        if tagged and not trust_policy_allows(role.assume_role_policy_document, caller,
                                              external_id, action="sts:TagSession"):
            return "tag session"
        return None

    @staticmethod
    def caller(call: Call) -> Caller:
        """Who signed the request, as a trust policy names it (moto_lock held): a
        role session (moto's temporary key, which knows its role), an IAM user, or
        plain credentials moto holds no user for."""
        from moto.sts.models import sts_backends

        account, key = call.account, call.access_key
        iam = _iam_backend(account)
        access_key = iam.access_keys.get(key) if iam is not None else None
        if access_key is not None and access_key.role_arn:
            sessions = sts_backends[account][PARTITION].assumed_roles
            session = next((r for r in reversed(sessions) if r.access_key_id == key), None)
            name = access_key.role_arn.split("/")[-1]
            arn = session.arn if session is not None else \
                f"arn:{PARTITION}:sts::{account}:assumed-role/{name}/unknown"
            return Caller(account, frozenset({access_key.role_arn, arn}), arn)
        user = iam.get_user_from_access_key_id(key) if iam is not None else None
        if user is not None:
            return Caller(account, frozenset({user.arn}), user.arn)
        arn = f"arn:{PARTITION}:iam::{account}:user/moto"
        return Caller(account, frozenset({arn}), arn)

    def record_session(self, call: Call, role_arn: str) -> dict[str, Any]:
        """Keeps what a caller asked AssumeRole for (moto ignores session names, tags,
        external ids and session policies), so tests can check it: the last 500 in
        stats["sessions"]. The caller fills in `denied` once it has decided."""
        params = call.params
        tags = {params[k]: params.get(k[: -len("Key")] + "Value", "")
                for k in params if k.startswith("Tags.member.") and k.endswith(".Key")}
        session = {"role": role_arn, "name": params.get("RoleSessionName", ""), "tags": tags,
                   "external_id": params.get("ExternalId"), "policy": params.get("Policy"),
                   "denied": None}
        with self.lock:
            sessions = self.state.stats["sessions"]
            sessions.append(session)
            del sessions[:-500]
        return session

    # ---- request log ----------------------------------------------------------

    def record(self, call: Call, resp: Response, started: float) -> None:
        """Append the answered request to the log (see the module docstring)."""
        entry: dict[str, Any] = {
            "time": started, "duration": time.time() - started,
            "service": call.service, "operation": call.operation, "key": call.key,
            "caller_account": call.account, "access_key": call.access_key,
            "user_agent": call.environ.get("HTTP_USER_AGENT", ""),
            "status": resp.status, "outcome": resp.fault or "answered",
        }
        if call.param("StackName"):
            entry["stack_name"] = call.param("StackName")
        account_id = call.param("AccountId") or call.param("ResourceId") or call.param("ChildId")
        if account_id:
            entry["account_id"] = account_id
        if call.region:
            entry["region"] = call.region
        with self.lock:
            entry["seq"] = self.state.log_next
            self.state.log_next += 1
            self.state.log.append(entry)

    def read_log(self, query: str) -> Response:
        """GET /_silo/log?since=N&limit=L."""
        args = {k: v[-1] for k, v in parse_qs(query).items()}
        try:
            since, limit = int(args.get("since", 0)), int(args.get("limit", LOG_PAGE))
            if since < 0 or limit < 0:
                raise ValueError
        except ValueError:
            return json_response(400, {"error": "since and limit must be integers >= 0"})
        with self.lock:
            log = self.state.log
            first = log[0]["seq"] if log else self.state.log_next
            start = max(0, since - first)
            entries = list(itertools.islice(log, start, start + limit))
            last = self.state.log_next
        nxt = entries[-1]["seq"] + 1 if entries else min(max(since, first), last)
        return json_response(200, {"next": nxt, "entries": entries, "more": nxt < last,
                                    "dropped": max(0, first - since)})

    # ---- admin API ------------------------------------------------------------

    def admin(self, environ: dict[str, Any], path: str) -> Response:
        method = environ.get("REQUEST_METHOD", "GET")
        route = (method, path.rstrip("/"))
        if route == ("GET", "/_silo/health"):
            return json_response(200, {"ok": True})
        if route == ("POST", "/_silo/reset"):
            self.reset()
            return json_response(200, {"ok": True})
        if route == ("GET", "/_silo/config"):
            with self.lock:
                return json_response(200, dataclasses.asdict(self.state.config))
        if route == ("POST", "/_silo/config"):
            raw = self._buffer_body(environ)
            try:
                updates = json.loads(raw or b"{}")
                with self.lock:
                    self.state.config = self.state.config.merged(updates)
                    if "rate_limits" in updates or "rate_limit_scope" in updates:
                        self.state.buckets.clear()
                    if "stack_failures" in updates:
                        self.state.stack_failures_used.clear()
                    return json_response(200, dataclasses.asdict(self.state.config))
            except ValueError as exc:
                return json_response(400, {"error": str(exc)})
        if route == ("GET", "/_silo/stats"):
            pending, unlisted = self.unready_accounts()
            with self.lock:
                stats = json.loads(json.dumps(self.state.stats))
            return json_response(200, {**stats, "accounts_pending": sorted(pending),
                                       "accounts_unlisted": sorted(unlisted)})
        if route == ("GET", "/_silo/log"):
            return self.read_log(environ.get("QUERY_STRING", ""))
        if route == ("GET", "/_silo/stack_operations"):
            self.advance_clock()
            with self.lock:
                return json_response(200, [op.public() for op in self.state.stack_ops])
        if route == ("POST", "/_silo/drift"):
            try:
                body = json.loads(self._buffer_body(environ) or b"{}")
            except ValueError as exc:
                return json_response(400, {"error": str(exc)})
            return self.make_drift(body)
        known = {"/_silo/health", "/_silo/reset", "/_silo/config", "/_silo/stats",
                 "/_silo/log", "/_silo/stack_operations", "/_silo/drift"}
        if path.rstrip("/") in known:
            return json_response(405, {"error": f"{method} not allowed on {path}"})
        return json_response(404, {"error": f"no admin endpoint {path}"})


def _resource_failed(op: StackOp, verb: str, stack_status: str) -> None:
    """The events and status of a stack operation that failed on op.resource: the resource
    in progress, then failed with op.reason, then the stack's summary ("The following
    resource(s) failed to <verb>: [...]") in `stack_status`."""
    stack, (logical_id, resource_type) = op.stack, op.resource
    upper = verb.upper()
    _stack_event(stack, f"{upper}_IN_PROGRESS", logical_id, resource_type)
    _stack_event(stack, f"{upper}_FAILED", logical_id, resource_type, op.reason)
    summary = f"The following resource(s) failed to {verb}: [{logical_id}]. "
    _stack_event(stack, stack_status, reason=summary)
    stack.status = stack_status
    stack.stack_status_reason = summary


def _stack_event(stack: Any, status: str, logical_id: str | None = None,
                 resource_type: str = "AWS::CloudFormation::Stack",
                 reason: str | None = None) -> None:
    """Append a moto stack event; stack-level when logical_id is None."""
    from moto.cloudformation.models import Event

    stack.events.append(Event(
        stack_id=stack.stack_id, stack_name=stack.name,
        logical_resource_id=logical_id or stack.name,
        physical_resource_id="" if logical_id else stack.stack_id,
        resource_type=resource_type if logical_id else "AWS::CloudFormation::Stack",
        resource_status=status, resource_status_reason=reason,
        resource_properties=None))


# --------------------------------------------------------------------------
# moto speed-ups for large organizations
# --------------------------------------------------------------------------
#
# At 6,000 accounts moto 5.2.5 spent 100-250 ms on every request (see
# scale_check.py), growing with the organization. Five targeted monkeypatches,
# applied by build_app(), keep moto's behaviour and remove the cost:
#
# 1. get_account_id_from (moto.iam.models): moto maps the request's access key
#    to an account by walking every account's IAM backends, twice per request,
#    creating an IAM backend for each of the six partitions of each account as
#    it goes. AccessKeyAccounts remembers the account of each key (checked on
#    every use), walks only the backends that exist, and remembers keys that
#    are in no account (such as "testing") until moto makes a new access key.
# 2. list_of_moto_modules (moto.backends): listed moto's package directory on
#    disk for every request; its answer never changes, so it is cached.
# 3. OrganizationsBackend.create_account: moto attached FullAWSAccess and
#    RCPFullAWSAccess to a new account through attach_policy, which looks the
#    account up among all of them (twice). The replacement attaches them to the
#    new account directly; otherwise it is moto's code.
# 4. OrganizationsBackend.list_accounts / list_accounts_for_parent: moto
#    described every account and scanned them all for the NextToken on every
#    page. The replacements describe one page and find the token with a list
#    lookup; same order (join time), same page sizes (100 / 20 by default),
#    NextToken is the base64 of the next page's first account id (and parent).
# 5. BackendDict._create_account_specific_backend (moto.core.base_backend): run
#    on every backends[account] lookup (several per request), it copied the list
#    of every account id to see whether the account is known. The replacement
#    is moto's code with a dict lookup instead.


class AccessKeyAccounts:
    """A drop-in for moto.iam.models.get_account_id_from (see above)."""

    def __init__(self) -> None:
        self.known: dict[str, str] = {}     # access key -> account holding it
        self.unknown: set[str] = set()      # keys no account held at the last walk

    def __call__(self, access_key: str) -> str:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.iam.models import iam_backends

        account = self.known.get(access_key)
        if account is not None and self.holds(iam_backends.get(account), access_key):
            return account
        if access_key in self.unknown:
            return DEFAULT_ACCOUNT_ID
        for account_id, partitions in list(iam_backends.items()):
            if self.holds(partitions, access_key):
                self.known[access_key] = account_id
                return account_id
        self.unknown.add(access_key)
        return DEFAULT_ACCOUNT_ID

    @staticmethod
    def holds(partitions: Any, access_key: str) -> bool:
        # dict.values: the partitions that exist, without creating the others.
        return partitions is not None and any(
            access_key in backend.access_keys for backend in list(dict.values(partitions)))

    def new_key(self) -> None:
        self.unknown.clear()


def _page_token(*parts: str) -> str:
    import base64

    return base64.urlsafe_b64encode("|".join(parts).encode()).decode()


def _account_page(backend: Any, accounts: list[Any], max_results: Any, next_token: Any,
                  default: int, scope: str = "") -> tuple[list[Any], str | None]:
    """One page of `accounts` (in order) starting at NextToken."""
    import base64

    from moto.organizations.exceptions import InvalidInputException

    size = int(max_results or default)
    start = 0
    if next_token:
        try:
            token_scope, first = base64.urlsafe_b64decode(next_token).decode().split("|")
            if token_scope != scope:
                raise ValueError
            start = [a.id for a in accounts].index(first)
        except ValueError:
            raise InvalidInputException("You specified an invalid value for nextToken.")
    end = start + size
    token = _page_token(scope, accounts[end].id) if end < len(accounts) else None
    return accounts[start:end], token


def _create_account(self: Any, **kwargs: Any) -> dict[str, Any]:
    from moto.organizations import utils
    from moto.organizations.exceptions import AWSOrganizationsNotInUseException
    from moto.organizations.models import FakeAccount, organizations_backends

    if self.org is None:
        raise AWSOrganizationsNotInUseException
    new_account = FakeAccount(self.org, **kwargs)
    self.accounts.append(new_account)
    for policy_id in (utils.DEFAULT_SCP_POLICY_ID, utils.DEFAULT_RCP_POLICY_ID):
        policy = self.get_policy_by_id(policy_id)
        new_account.attached_policies.append(policy)
        policy.attachments.append(new_account)
    organizations_backends.master_accounts[new_account.id] = (self.account_id, self.partition)
    return new_account.create_account_status


def _list_accounts(self: Any, max_results: Any = None, next_token: Any = None) -> Any:
    accounts = sorted(self.accounts, key=lambda a: a.create_time)
    page, token = _account_page(self, accounts, max_results, next_token, 100)
    return [a.describe() for a in page], token


def _list_accounts_for_parent(self: Any, parent_id: str, max_results: Any = None,
                              next_token: Any = None) -> Any:
    parent_id = self.validate_parent_id(parent_id)
    accounts = sorted((a for a in self.accounts if a.parent_id == parent_id),
                      key=lambda a: a.create_time)
    return _account_page(self, accounts, max_results, next_token, 20, parent_id)


def _create_account_specific_backend(self: Any, account_id: str) -> None:
    from moto.core.base_backend import AccountSpecificBackend, BackendDict, backend_lock

    if dict.__contains__(self, account_id):
        return
    with backend_lock:
        if not dict.__contains__(self, account_id):
            self[account_id] = AccountSpecificBackend(
                service_name=self.service_name, account_id=account_id, backend=self.backend,
                use_boto3_regions=self._use_boto3_regions,
                additional_regions=self._additional_regions)
        if self not in BackendDict._instances:
            BackendDict._instances.append(self)


ACCESS_KEY_ACCOUNTS = AccessKeyAccounts()


def speed_up_moto() -> None:
    """Apply the monkeypatches above (idempotent)."""
    import moto.backends
    import moto.iam.models as iam_models
    from moto.core.base_backend import BackendDict
    from moto.organizations.models import OrganizationsBackend

    if getattr(iam_models, "_silo_sped_up", False):
        return
    iam_models.get_account_id_from = ACCESS_KEY_ACCOUNTS
    original_init = iam_models.AccessKey.__init__

    def access_key_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        ACCESS_KEY_ACCOUNTS.new_key()

    iam_models.AccessKey.__init__ = access_key_init
    modules = tuple(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: modules
    BackendDict._create_account_specific_backend = _create_account_specific_backend
    OrganizationsBackend.create_account = _create_account
    OrganizationsBackend.list_accounts = _list_accounts
    OrganizationsBackend.list_accounts_for_parent = _list_accounts_for_parent
    iam_models._silo_sped_up = True


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------

def build_app() -> SiloLayer:
    speed_up_moto()
    inner = DomainDispatcherApplication(create_backend_app)
    # Build the backends we always use now, not on the first (slow) request.
    for service in ("organizations", "sts", "cloudformation", "iam", "account"):
        inner.app_instances[service] = create_backend_app(service)
    return SiloLayer(inner)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="silo-awssim %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.verbose else logging.ERROR)

    server = make_server(args.host, args.port, build_app(), threaded=True,
                         request_handler=MotoRequestHandler)
    port = server.server_address[1]
    os.environ.setdefault("MOTO_PORT", str(port))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, name="serve", daemon=True)
    thread.start()
    print(f"silo-awssim listening on http://{args.host}:{port}", flush=True)
    while not stop.wait(0.5):
        if not thread.is_alive():
            return 1
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
