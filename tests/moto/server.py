"""A moto IAM/STS server for engine's tests, with test-only endpoints.

Why this exists: the tests run the real AWS SDK over HTTP against moto, and
need three things moto's own `moto_server` does not give them: users whose
credentials look old (backdated creation and last-use dates, which only moto's
Python API can set), a count of the API calls the engine made, and faults
(throttling, dropped connections) to prove that the engine's retries end in the
right state. It also keeps a log of every call (action, user, key id, status)
and can slow calls down, so a test can interrupt an apply while writes are in
flight and then count the writes each key received.

Usage: `python server.py` binds 127.0.0.1 on a free port, prints `PORT <n>` as
its first line on stdout, and serves until it is killed or its stdin closes
(so a test runner that dies takes its server with it).

Test-only endpoints, plain JSON, under /_engine/ (never counted, never faulted):

  POST /_engine/seed          [{name, path?, created, password: null |
                                {changed, last_used: null | date},
                                keys: [{created, last_used: null | date, active}]}]
                              -> [{name, keys: [access key id, ...]}] (ordered as given)
  GET  /_engine/state         {users: [{name, id, path, arn, created, login_profile,
                                password_last_used, keys: [{id, status, created,
                                last_used}]}]}
  GET  /_engine/calls         {Action: count} for IAM/STS calls since the last reset
  GET  /_engine/requests      [{action, user, key_id, status, at}]: every IAM/STS call since
                              the last reset, in the order they arrived; `user` and
                              `key_id` are the `UserName` and `AccessKeyId` parameters
                              (null when absent); `status` is the HTTP status answered
                              (moto's, 400 for an injected throttle), 0 when no answer
                              was sent: a dropped call, or one still in flight;
                              `at` when it arrived (seconds since the epoch)
  POST /_engine/calls/reset   clears the counts and the request logs (both)
  GET  /_engine/api_requests  [{account, method, path, target, findings, status, at, done}]:
                              every call of a JSON or REST-JSON API (Security Hub, SQS,
                              Config, ...: no `Action` parameter), which `requests` and
                              `calls` leave out; `target` is the X-Amz-Target header
                              (null for REST), `findings` the length of the body's
                              `Findings` list (Security Hub BatchImportFindings), else null
  POST /_engine/faults        {throttle: 0.2, drop: 0.1, seed: 42, actions: [...],
                               latency_ms: 500}
                              `{}` turns faults off (and resets the counts below).
  GET  /_engine/faults        {throttled: n, dropped: n} injected since the last POST
  POST /_engine/report        {freeze: true, generated?: date} serves the report as it is
                              now, stamped `generated` (default now), to every
                              GetCredentialReport until {freeze: false}; while frozen,
                              GenerateCredentialReport answers COMPLETE and changes nothing
  POST /_engine/outbox        {sns_topic?, ses_identity?, region?} -> {topic_arn?}: an SNS
                              topic and a verified SES sender for notification tests
  GET  /_engine/outbox        {sns: [{topic, subject, message, attributes}], ses: [{source,
                              destinations, subject, body}]}: what SNS published, SES sent
  POST /_engine/mutate        [{op, ...}] changes the account behind the engine's back:
                              {op: touch_key, key, last_used}, {op: touch_password,
                              user, last_used}, {op: delete_key, user, key},
                              {op: recreate_user, user} (deleted and created again now,
                              with a new console password), {op: recreate_login_profile,
                              user} (password removed and set again now),
                              {op: create_login_profile, user} (a new password now)
  POST /_engine/assume        {role_arn, session} -> {access_key_id, secret_access_key,
                              session_token}: credentials of an assumed role, as
                              STS AssumeRole gives them
  POST /_engine/role          {account, name, external_id?}: creates role NAME in
                              ACCOUNT (which STS AssumeRole then lets callers assume,
                              with that external id if one is given)

`requests` entries also carry `done`, when the answer was sent (null while none
was), and, for AssumeRole, the call's `role_arn`, `session` (RoleSessionName) and
`external_id`.

`seed`, `state` and `mutate` take `?account=ID` for another account than moto's
default one (123456789012); `requests` entries carry the `account` whose
credentials signed the call. Unlike moto, STS AssumeRole refuses (AccessDenied)
a role that does not exist, or a wrong external id, as AWS does.

`faults` also takes `max: n`: inject at most n faults, then none; and
`after_drop: [{op, ...}]`: mutations made once, right after the first dropped
call was processed (someone acting while the answer is lost); and `latency_ms: n`:
delay the answer of every call that matches `actions` (all calls without it) by n
milliseconds *after* moto processed it, so the write has happened while the caller
still waits (a throttled call waits too, before its error; a dropped one before the
hang-up). Latency is not a fault: it draws nothing from the random sequence and
`max` does not count or limit it. `deny: share` answers that share of the calls
with IAM's `AccessDenied` (HTTP 403) without reaching moto (drawn after throttle
and drop). `accounts: [id, ...]` limits faults and latency to calls signed by
those accounts (all accounts without it). The server is threaded: a delayed call holds up
only itself, never other calls (nor the /_engine/ endpoints).

Dates are RFC 3339 (`2020-01-02T03:04:05Z`). Faults are drawn from a
`random.Random(seed)`, one draw per API call (in the order calls arrive), so a
test that makes its calls one after another sees the same faults every run.
A throttled call gets IAM's `Throttling` error without reaching moto. A dropped
call is *processed by moto first*, then its connection is shut down without a
response: the write happened but the client never heard, the nastiest case.

Moto quirks this server papers over, so the report looks like AWS's:
- moto writes `password_last_changed` as the user's creation time, and
  `password_last_used` as `not_supported` for users without a password; AWS
  writes the last password change, and `N/A` when there is no password.
- moto stamps every credential report `2015-02-02T20:02:02Z`; here it carries
  the time of the last GenerateCredentialReport, as AWS's does.
- moto answers GetLoginProfile with the user's creation date; here it is the
  time the console password was created (seeded as its `changed` date).
"""

from __future__ import annotations

import io
import json
import random
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.iam.models import AccessKeyLastUsed, User, get_account_id_from, iam_backends
from moto.iam.responses import IamResponse
from moto.sts.models import sts_backends
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

PREFIX = "/_engine/"
REPORT_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S+00:00"
REGION = "us-east-1"


def parse_date(value: str) -> datetime:
    """An RFC 3339 date as a naive UTC datetime, which is what moto stores."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def render_date(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- moto patches ---------------------------------------------------------

_moto_user_to_csv = User.to_csv


def _user_to_csv(self: User) -> str:
    fields = _moto_user_to_csv(self).rstrip("\n").split(",")
    # Columns 4 and 5: password_last_used, password_last_changed.
    if self.password:
        changed = getattr(self, "engine_password_changed", None) or self.create_date
        fields[5] = changed.strftime(REPORT_DATE_FORMAT)
    else:
        fields[4] = "N/A"
        fields[5] = "N/A"
    return ",".join(fields) + "\n"


User.to_csv = _user_to_csv  # type: ignore[method-assign]


class Report:
    """The credential report as served: live (moto's, stamped with the last
    generation time) or frozen (an earlier snapshot, as AWS serves one
    generated up to hours ago while the account moves on)."""

    lock = threading.Lock()
    # Per account: when its report was last generated.
    generated: dict[str, datetime] = {}
    frozen: tuple[str, datetime] | None = None


_moto_generate_report = IamResponse.generate_credential_report
_moto_get_report = IamResponse.get_credential_report


def _generate_credential_report(self: IamResponse) -> Any:
    with Report.lock:
        if Report.frozen is None:
            Report.generated[self.current_account] = datetime.utcnow().replace(microsecond=0)
    return _moto_generate_report(self)


def _get_credential_report(self: IamResponse) -> Any:
    with Report.lock:
        frozen = Report.frozen if self.current_account == DEFAULT_ACCOUNT_ID else None
        generated = Report.generated.get(self.current_account)
    if frozen is None:
        content = self.backend.get_credential_report()
    else:
        content, generated = frozen
    return ActionResult(
        {
            "Content": content,
            "ReportFormat": "text/csv",
            "GeneratedTime": render_date(generated) or "2015-02-02T20:02:02Z",
        }
    )


def _get_login_profile(self: IamResponse) -> Any:
    user = self.backend.get_login_profile(self._get_param("UserName"))
    created = getattr(user, "engine_profile_created", None) or user.create_date
    return ActionResult(
        {
            "LoginProfile": {
                "UserName": user.name,
                "CreateDate": created,
                "PasswordResetRequired": user.password_reset_required,
            }
        }
    )


_moto_create_login_profile = IamResponse.create_login_profile


def _create_login_profile(self: IamResponse) -> Any:
    result = _moto_create_login_profile(self)
    user = self.backend.get_user(self._get_param("UserName"))
    user.engine_profile_created = datetime.utcnow()
    user.engine_password_changed = user.engine_profile_created
    return result


IamResponse.generate_credential_report = _generate_credential_report  # type: ignore[method-assign]
IamResponse.get_credential_report = _get_credential_report  # type: ignore[method-assign]
IamResponse.get_login_profile = _get_login_profile  # type: ignore[method-assign]
IamResponse.create_login_profile = _create_login_profile  # type: ignore[method-assign]


def backend(account: str | None = None) -> Any:
    return iam_backends[account or DEFAULT_ACCOUNT_ID]["global"]


# --- test-only endpoints --------------------------------------------------


def seed(users: list[dict[str, Any]], account: str | None = None) -> list[dict[str, Any]]:
    iam = backend(account)
    seeded = []
    for spec in users:
        name = spec["name"]
        user = iam.create_user(REGION, name, spec.get("path") or "/")
        user.create_date = parse_date(spec["created"])
        password = spec.get("password")
        if password is not None:
            iam.create_login_profile(name, "Seeded-Password-1!")
            changed = password.get("changed") or password.get("created")
            if changed:
                user.engine_password_changed = parse_date(changed)
            if password.get("last_used"):
                user.password_last_used = parse_date(password["last_used"])
            user.engine_profile_created = parse_date(
                password.get("profile_created") or changed or spec["created"]
            )
        tags = spec.get("tags") or {}
        if tags:
            iam.tag_user(name, [{"Key": k, "Value": v} for k, v in tags.items()])
        key_ids = []
        for key_spec in spec.get("keys", []):
            status = "Active" if key_spec.get("active", True) else "Inactive"
            key = iam.create_access_key(name, status=status)
            key.create_date = parse_date(key_spec["created"])
            if key_spec.get("last_used"):
                key.last_used = AccessKeyLastUsed(
                    parse_date(key_spec["last_used"]), "iam", REGION
                )
            key_ids.append(key.access_key_id)
        seeded.append({"name": name, "keys": key_ids})
    return seeded


def outbox_setup(spec: dict[str, Any], account: str | None) -> dict[str, Any]:
    """An SNS topic and a verified SES sender, for the notification tests."""
    from moto.sns.models import sns_backends
    from moto.ses.models import ses_backends

    acct = account or DEFAULT_ACCOUNT_ID
    region = spec.get("region") or REGION
    out: dict[str, Any] = {}
    if spec.get("sns_topic"):
        out["topic_arn"] = sns_backends[acct][region].create_topic(spec["sns_topic"]).arn
    if spec.get("ses_identity"):
        ses_backends[acct][region].verify_email_identity(spec["ses_identity"])
    return out


def outbox(region: str | None, account: str | None) -> dict[str, Any]:
    """What SNS published and SES sent in `region`."""
    from moto.sns.models import sns_backends
    from moto.ses.models import ses_backends

    acct = account or DEFAULT_ACCOUNT_ID
    region = region or REGION
    sns = []
    for arn, topic in sns_backends[acct][region].topics.items():
        for sent in getattr(topic, "sent_notifications", []):
            _id, message, subject, attributes = sent[0], sent[1], sent[2], sent[3]
            sns.append({"topic": arn, "subject": subject, "message": message,
                        "attributes": {k: (v or {}).get("Value", (v or {}).get("StringValue")) if isinstance(v, dict) else v
                                       for k, v in (attributes or {}).items()}})
    ses = []
    for m in ses_backends[acct][region].sent_messages:
        ses.append({"source": getattr(m, "source", None), "destinations": getattr(m, "destinations", None),
                    "subject": getattr(m, "subject", None), "body": getattr(m, "body", None)})
    return {"sns": sns, "ses": ses}


def freeze_report(spec: dict[str, Any]) -> dict[str, Any]:
    with Report.lock:
        if spec.get("freeze"):
            generated = (
                parse_date(spec["generated"])
                if spec.get("generated")
                else datetime.utcnow().replace(microsecond=0)
            )
            backend().generate_report()
            Report.frozen = (backend().get_credential_report(), generated)
            return {"generated": render_date(generated)}
        Report.frozen = None
        return {}


def mutate(ops: list[dict[str, Any]], account: str | None = None) -> dict[str, Any]:
    iam = backend(account)
    for op in ops:
        kind = op["op"]
        if kind == "touch_key":
            key = iam.access_keys[op["key"]]
            key.last_used = AccessKeyLastUsed(parse_date(op["last_used"]), "iam", REGION)
        elif kind == "touch_password":
            iam.get_user(op["user"]).password_last_used = parse_date(op["last_used"])
        elif kind == "delete_key":
            iam.delete_access_key(op["key"], op["user"])
        elif kind == "recreate_user":
            name = op["user"]
            old = iam.get_user(name)
            for key in list(old.access_keys):
                iam.delete_access_key(key.access_key_id, name)
            old.password = None
            iam.delete_user(name)
            user = iam.create_user(REGION, name, old.path)
            now = datetime.utcnow()
            user.create_date = now
            iam.create_login_profile(name, "Recreated-Password-1!")
            user.engine_password_changed = now
            user.engine_profile_created = now
        elif kind == "create_login_profile":
            name = op["user"]
            iam.create_login_profile(name, "Created-Password-1!")
            user = iam.get_user(name)
            user.engine_password_changed = datetime.utcnow()
            user.engine_profile_created = user.engine_password_changed
            user.password_last_used = None
        elif kind == "recreate_login_profile":
            name = op["user"]
            iam.delete_login_profile(name)
            iam.create_login_profile(name, "Recreated-Password-1!")
            user = iam.get_user(name)
            user.engine_password_changed = datetime.utcnow()
            user.engine_profile_created = user.engine_password_changed
            user.password_last_used = None
        else:
            raise ValueError(f"unknown op {kind!r}")
    return {}


def assume(spec: dict[str, Any]) -> dict[str, Any]:
    role = sts_backends[DEFAULT_ACCOUNT_ID]["aws"].assume_role(
        region_name=REGION,
        role_session_name=spec.get("session", "engine-test"),
        role_arn=spec["role_arn"],
        policy="",
        duration=3600,
        external_id="",
    )
    return {
        "access_key_id": role.access_key_id,
        "secret_access_key": role.secret_access_key,
        "session_token": role.session_token,
    }


def create_role(spec: dict[str, Any]) -> dict[str, Any]:
    account, name = spec["account"], spec["name"]
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:root"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )
    role = backend(account).create_role(
        role_name=name,
        assume_role_policy_document=trust,
        path="/",
        permissions_boundary=None,
        description="engine test role",
        tags=[],
        max_session_duration="3600",
    )
    role.engine_external_id = spec.get("external_id")
    return {"arn": role.arn}


ACCESS_DENIED = (
    '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
    "<Error><Type>Sender</Type><Code>AccessDenied</Code><Message>{message}</Message></Error>"
    "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
)


def assume_role_refusal(params: dict[str, str]) -> str | None:
    """Why AWS would refuse this AssumeRole: the role does not exist, or the
    external id does not match; None when it may be assumed."""
    arn = params.get("RoleArn", "")
    parts = arn.split(":")
    if len(parts) < 6 or not parts[5].startswith("role/"):
        return f"Invalid role ARN {arn}"
    account, name = parts[4], parts[5].rsplit("/", 1)[-1]
    try:
        role = backend(account).get_role(name)
    except Exception:
        return f"User is not authorized to perform: sts:AssumeRole on resource: {arn}"
    wanted = getattr(role, "engine_external_id", None)
    if wanted is not None and params.get("ExternalId") != wanted:
        return f"User is not authorized to perform: sts:AssumeRole on resource: {arn} (external id)"
    return None


def caller_account(environ: dict[str, Any]) -> str:
    """The account whose credentials signed a request (moto's own mapping)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    marker = "Credential="
    if marker not in auth:
        return DEFAULT_ACCOUNT_ID
    key = auth.split(marker, 1)[1].split("/", 1)[0]
    return get_account_id_from(key)


def state(account: str | None = None) -> dict[str, Any]:
    users = []
    for user in backend(account).users.values():
        last_used = user.password_last_used
        users.append(
            {
                "name": user.name,
                "id": user.id,
                "path": user.path,
                "arn": user.arn,
                "created": render_date(user.create_date),
                "login_profile": bool(user.password),
                "password_last_used": render_date(last_used),
                "keys": [
                    {
                        "id": key.access_key_id,
                        "status": key.status,
                        "created": render_date(key.create_date),
                        "last_used": render_date(
                            key.last_used.timestamp
                            if isinstance(key.last_used, AccessKeyLastUsed)
                            else key.last_used
                        ),
                    }
                    for key in user.access_keys
                ],
            }
        )
    return {"users": users}


class Faults:
    """Which API calls to throttle or drop; deterministic for a seed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.configure({})

    def configure(self, spec: dict[str, Any]) -> None:
        with self.lock:
            self.throttle = float(spec.get("throttle", 0.0))
            self.drop = float(spec.get("drop", 0.0))
            self.actions = set(spec["actions"]) if spec.get("actions") else None
            self.rng = random.Random(spec.get("seed", 0))
            self.max = spec.get("max")
            self.after_drop = list(spec.get("after_drop") or [])
            self.latency = max(0.0, float(spec.get("latency_ms", 0))) / 1000.0
            self.deny = float(spec.get("deny", 0.0))
            self.accounts = set(spec["accounts"]) if spec.get("accounts") else None
            self.injected = {"throttled": 0, "dropped": 0}
            self.denied = 0

    def delay(self, action: str, account: str | None = None) -> float:
        """Seconds to hold the answer to `action` back (not a fault: no draw, no `max`)."""
        with self.lock:
            if self.actions is not None and action not in self.actions:
                return 0.0
            if self.accounts is not None and account not in self.accounts:
                return 0.0
            return self.latency

    def draw(self, action: str, account: str | None = None) -> str | None:
        with self.lock:
            if self.throttle <= 0 and self.drop <= 0 and self.deny <= 0:
                return None
            if self.actions is not None and action not in self.actions:
                return None
            if self.accounts is not None and account not in self.accounts:
                return None
            if self.max is not None and sum(self.injected.values()) + self.denied >= self.max:
                return None
            roll = self.rng.random()
            if roll < self.throttle:
                self.injected["throttled"] += 1
                return "throttle"
            if roll < self.throttle + self.drop:
                self.injected["dropped"] += 1
                return "drop"
            if roll < self.throttle + self.drop + self.deny:
                self.denied += 1
                return "deny"
            return None

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.injected)


class Calls:
    """Counts of API calls by action, and the log of each call as it arrived."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.log: list[dict[str, Any]] = []
        # Calls of JSON and REST-JSON APIs (no `Action`): not counted above.
        self.api: list[dict[str, Any]] = []

    def record(self, action: str, params: dict[str, str], account: str) -> dict[str, Any]:
        """Count a call and log it, unanswered; `answered` fills in its status."""
        entry = {
            "account": account,
            "action": action,
            "user": params.get("UserName"),
            "key_id": params.get("AccessKeyId"),
            "status": None,
            "at": time.time(),
            "done": None,
        }
        if action == "AssumeRole":
            entry["role_arn"] = params.get("RoleArn")
            entry["session"] = params.get("RoleSessionName")
            entry["external_id"] = params.get("ExternalId")
        with self.lock:
            self.counts[action] = self.counts.get(action, 0) + 1
            self.log.append(entry)
        return entry

    def record_api(self, environ: dict[str, Any], body: bytes) -> dict[str, Any]:
        """Log a call without `Action` (JSON, REST-JSON), unanswered."""
        findings = None
        try:
            parsed = json.loads(body) if body.strip() else None
            if isinstance(parsed, dict) and isinstance(parsed.get("Findings"), list):
                findings = len(parsed["Findings"])
        except ValueError:
            pass
        entry = {
            "account": environ.get("HTTP_X_MOTO_ACCOUNT_ID") or caller_account(environ),
            "method": environ.get("REQUEST_METHOD", "GET"),
            "path": environ.get("PATH_INFO", ""),
            "target": environ.get("HTTP_X_AMZ_TARGET"),
            "findings": findings,
            "status": None,
            "at": time.time(),
            "done": None,
        }
        with self.lock:
            self.api.append(entry)
        return entry

    def answered(self, entry: dict[str, Any], status: int) -> None:
        with self.lock:
            entry["status"] = status
            entry["done"] = time.time()

    def api_requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(entry, status=entry["status"] or 0) for entry in self.api]

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(entry, status=entry["status"] or 0) for entry in self.log]

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()
            self.log.clear()
            self.api.clear()


THROTTLE_BODY = (
    b'<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">'
    b"<Error><Type>Sender</Type><Code>Throttling</Code>"
    b"<Message>Rate exceeded</Message></Error>"
    b"<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
)

DENIED_BODY = (
    '<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">'
    "<Error><Type>Sender</Type><Code>AccessDenied</Code>"
    "<Message>User is not authorized to perform: iam:{action} (engine test fault)</Message></Error>"
    "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
)

StartResponse = Callable[..., Any]


class DroppedConnection(ConnectionResetError):
    """Raised after a dropped call's socket is shut down; werkzeug treats a
    ConnectionError from the app as a client that went away, and stays quiet."""


class EngineApp:
    """WSGI middleware in front of moto: test endpoints, call log, faults, latency."""

    def __init__(self, moto: Any) -> None:
        self.moto = moto
        self.calls = Calls()
        self.faults = Faults()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(PREFIX):
            return self.engine_endpoint(environ, start_response, path[len(PREFIX) :])

        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(body)
        params = self.params(environ, body)
        action = params.get("Action")
        if action is None:
            entry = self.calls.record_api(environ, body)

            def answered(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                self.calls.answered(entry, int(status.split(" ", 1)[0]))
                if exc_info is None:
                    return start_response(status, headers)
                return start_response(status, headers, exc_info)

            return self.moto(environ, answered)

        account = caller_account(environ)
        entry = self.calls.record(action, params, account)
        fault = self.faults.draw(action, account)
        delay = self.faults.delay(action, account)
        if action == "AssumeRole" and fault is None:
            refusal = assume_role_refusal(params)
            if refusal is not None:
                self.wait(delay)
                self.calls.answered(entry, 403)
                body = ACCESS_DENIED.format(message=refusal).encode()
                start_response(
                    "403 Forbidden",
                    [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))],
                )
                return [body]
        if fault == "deny":
            self.wait(delay)
            self.calls.answered(entry, 403)
            body = DENIED_BODY.format(action=action).encode()
            start_response(
                "403 Forbidden",
                [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))],
            )
            return [body]
        if fault == "throttle":
            self.wait(delay)
            self.calls.answered(entry, 400)
            start_response(
                "400 Bad Request",
                [("Content-Type", "text/xml"), ("Content-Length", str(len(THROTTLE_BODY)))],
            )
            return [THROTTLE_BODY]

        try:
            status, headers, answer = self.run_moto(environ)
        except BaseException:
            self.calls.answered(entry, 500)
            raise
        if fault == "drop":
            # moto did the work; hang up without a word.
            # Someone changes the account while the answer is lost (once).
            with self.faults.lock:
                then, self.faults.after_drop = self.faults.after_drop, []
            mutate(then)
            self.wait(delay)
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            raise DroppedConnection("engine test server dropped this call on purpose")
        self.wait(delay)
        self.calls.answered(entry, int(status.split(" ", 1)[0]))
        start_response(status, headers)
        return [answer]

    def run_moto(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        """Let moto answer the call, in full: (status line, headers, body)."""
        answer: dict[str, Any] = {"status": "500 Internal Server Error", "headers": []}
        chunks: list[bytes] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            answer["status"], answer["headers"] = status, headers
            return chunks.append

        response = self.moto(environ, capture)
        try:
            for chunk in response:
                chunks.append(chunk)
        finally:
            if hasattr(response, "close"):
                response.close()
        return answer["status"], answer["headers"], b"".join(chunks)

    @staticmethod
    def wait(seconds: float) -> None:
        # Only this request's thread sleeps: the server runs a thread per request.
        if seconds > 0:
            time.sleep(seconds)

    @staticmethod
    def params(environ: dict[str, Any], body: bytes) -> dict[str, str]:
        """The call's query parameters (form body first, then the URL's), first values."""
        params: dict[str, str] = {}
        for source in (body.decode("utf-8", "replace"), environ.get("QUERY_STRING", "")):
            for name, values in parse_qs(source).items():
                if values and name not in params:
                    params[name] = values[0]
        return params

    def engine_endpoint(
        self, environ: dict[str, Any], start_response: StartResponse, name: str
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        query = parse_qs(environ.get("QUERY_STRING", ""))
        account = query.get("account", [None])[0]
        try:
            payload = json.loads(raw) if raw.strip() else None
            if method == "POST" and name == "seed":
                result: Any = seed(payload or [], account)
            elif method == "GET" and name == "state":
                result = state(account)
            elif method == "POST" and name == "role":
                result = create_role(payload or {})
            elif method == "GET" and name == "calls":
                result = self.calls.snapshot()
            elif method == "GET" and name == "requests":
                result = self.calls.requests()
            elif method == "GET" and name == "api_requests":
                result = self.calls.api_requests()
            elif method == "POST" and name == "calls/reset":
                self.calls.reset()
                result = {}
            elif method == "POST" and name == "report":
                result = freeze_report(payload or {})
            elif method == "POST" and name == "assume":
                result = assume(payload or {})
            elif method == "POST" and name == "mutate":
                result = mutate(payload or [], account)
            elif method == "POST" and name == "outbox":
                result = outbox_setup(payload or {}, account)
            elif method == "GET" and name == "outbox":
                result = outbox(query.get("region", [None])[0], account)
            elif method == "GET" and name == "faults":
                result = self.faults.counts()
            elif method == "POST" and name == "faults":
                self.faults.configure(payload or {})
                result = {}
            else:
                return respond(start_response, "404 Not Found", {"error": f"no endpoint {method} {PREFIX}{name}"})
        except Exception as error:  # report to the test, don't kill the server
            return respond(start_response, "400 Bad Request", {"error": f"{type(error).__name__}: {error}"})
        return respond(start_response, "200 OK", result)


def respond(start_response: StartResponse, status: str, value: Any) -> list[bytes]:
    body = json.dumps(value).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class QuietHandler(MotoRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def main() -> None:
    app = EngineApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"PORT {server.server_port}", flush=True)
    # Serve until stdin closes (the test that started us is gone) or we are killed.
    try:
        while sys.stdin.read(4096):
            pass
    except KeyboardInterrupt:
        pass
    server.shutdown()


if __name__ == "__main__":
    main()
