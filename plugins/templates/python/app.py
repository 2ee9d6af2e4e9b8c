"""{{name}}: an engine plugin written in Python (componentize-py).

What it decides, for each finding of its policy:

* a remediable access key (not exempt, not protected): deactivate it
  (reversible: the key can be activated again);
* an access key not due yet (stage `upcoming`, under a policy with
  `warn_before_days`): `none`, with a message to its owner saying when it
  will be deactivated (the host sends it where `[notifications]` says);
* a key the engine deactivated earlier (stage `deactivated`): `none`;
* an exempt user or a protected credential: `none`, with a reason;
* a password: `none`, with a reason (this plugin handles access keys only).

Every finding the host hands over that is `due` already breaks the policy's
rule (an access key older than the threshold, or a credential unused that
long), so there is no age check here.

The file has two parts:

* the decision, `decide_actions`, over the plain classes `Context`, `Finding`
  and `Action` below: no generated bindings needed, so
  `python3 -m unittest test_app.py` tests it natively. Change this part.
* the glue at the bottom, which exists only inside the component: it
  converts the WIT types componentize-py generates (`wit_world`) to and from
  the plain classes and exports the class `Decide` componentize-py looks for.

Inside the component there is no clock, filesystem, network or stdout:
`print()` and `time.time()` trap. Use `log(...)` and `ctx.now`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, List, Optional, Sequence, Tuple

# --------------------------------------------------------------------------
# Plain types (mirror the WIT records; enums are their kebab-case WIT names)
# --------------------------------------------------------------------------


@dataclass
class Context:
    """What the plugin is deciding for (WIT `context`)."""

    policy: str = "test-policy"
    params: Sequence[Tuple[str, str]] = field(default_factory=list)
    invocation_id: str = "test-invocation"
    rule: str = "cis-1-4"  # "cis-1-3" | "cis-1-4"
    dry_run: bool = False
    now: str = "2025-01-01T00:00:00Z"

    def param(self, key: str) -> Optional[str]:
        """The value of the policy parameter `key` (`params = { key = "value" }`), if set."""
        return next((v for k, v in self.params if k == key), None)


@dataclass
class Finding:
    """One credential that breaks the policy's rule, or will soon (WIT `finding`)."""

    user: str = "alice"
    credential: str = "access-key-1"  # "password" | "access-key-1" | "access-key-2"
    age_days: int = 100
    threshold_days: int = 90
    exempt: bool = False
    protected: bool = False
    arn: str = ""
    key_id: Optional[str] = None
    rule: str = "cis-1-4"
    timestamp: str = "2024-09-23T00:00:00Z"
    basis: str = "key-last-rotated"
    reason: str = ""
    stage: str = "due"  # "upcoming" | "due" | "deactivated"
    due_at: str = "2024-12-22T00:00:00Z"  # when it crosses (or crossed) the threshold
    deactivated_at: Optional[str] = None  # when the engine deactivated this key, if it did

    def remediable(self) -> bool:
        """Whether the host may act on this finding at all (not exempt, not protected)."""
        return not self.exempt and not self.protected

    def is_upcoming(self) -> bool:
        """Not due yet: the host refuses every action on it but `none` (which may notify its owner)."""
        return self.stage == "upcoming"

    def is_deactivated(self) -> bool:
        """An access key the engine deactivated earlier (at `deactivated_at`), still inactive."""
        return self.stage == "deactivated"

    def is_password(self) -> bool:
        return self.credential == "password"

    def is_access_key(self) -> bool:
        return not self.is_password()


@dataclass(frozen=True)
class Action:
    """One request of the plugin (WIT `action`).

    `kind` is "delete-access-key", "deactivate-access-key",
    "delete-login-profile" or "none"; `why` is the string of `none(...)`;
    `reason` the optional explanation shown in the plan; `notify` an
    optional message for the credential's owner (sent by the host at most
    once per credential and stage: with `none` when the plan is carried
    out, with a change once it is done).
    """

    finding: int
    kind: str
    why: Optional[str] = None
    reason: Optional[str] = None
    notify: Optional[str] = None

    @staticmethod
    def delete_access_key(finding: int) -> "Action":
        return Action(finding, "delete-access-key")

    @staticmethod
    def deactivate_access_key(finding: int) -> "Action":
        return Action(finding, "deactivate-access-key")

    @staticmethod
    def delete_login_profile(finding: int) -> "Action":
        return Action(finding, "delete-login-profile")

    @staticmethod
    def none(finding: int, why: str) -> "Action":
        return Action(finding, "none", why=why)

    def with_reason(self, reason: str) -> "Action":
        return replace(self, reason=reason)

    def with_notify(self, message: str) -> "Action":
        return replace(self, notify=message)


class PluginError(Exception):
    """The plugin cannot decide (e.g. a bad parameter): becomes `err(message)`."""


Log = Callable[[str, str], None]  # log(level, message); level "trace" | "debug" | "info" | "warn" | "error"


def _no_log(level: str, message: str) -> None:
    pass


# --------------------------------------------------------------------------
# The decision: change this
# --------------------------------------------------------------------------


def decide_actions(ctx: Context, findings: Sequence[Finding], log: Log = _no_log) -> List[Action]:
    """At most one action per finding (by index); raise PluginError to fail the policy's run."""
    actions: List[Action] = []
    for i, f in enumerate(findings):
        if f.is_password():
            actions.append(Action.none(i, "passwords are left alone by this plugin"))
        elif not f.remediable():
            actions.append(Action.none(i, "exempt or protected: left alone"))
        elif f.is_upcoming():
            actions.append(Action.none(i, "not due yet").with_notify(warning(f)))
        elif f.is_deactivated():
            actions.append(Action.none(i, "deactivated already"))
        else:
            actions.append(
                Action.deactivate_access_key(i).with_reason(
                    f"{f.age_days} days old (threshold {f.threshold_days})"
                )
            )
    deactivated = sum(a.kind == "deactivate-access-key" for a in actions)
    log("info", f"{len(findings)} finding(s): {deactivated} to deactivate")
    return actions


def warning(f: Finding) -> str:
    """The message to the owner of an upcoming access key: the host's reason
    (which says old or unused, as the policy's rule has it) and the day."""
    return f"{f.user}'s {f.reason}: it will be deactivated on {f.due_at[:10]}"


# --------------------------------------------------------------------------
# Glue to the component's WIT types. componentize-py generates `wit_world`
# when it builds the component; natively (the unit tests) it does not exist
# and nothing below is defined. No need to change it.
# --------------------------------------------------------------------------

try:
    from componentize_py_types import Err
    from wit_world import exports as _exports
    from wit_world.imports import host as _host
    from wit_world.imports import types as _wit
except ImportError:
    _exports = None

if _exports is not None:

    def _kebab(member) -> str:
        # Credential.ACCESS_KEY_1 -> "access-key-1", Rule.CIS_1_4 -> "cis-1-4", ...
        return member.name.lower().replace("_", "-")

    _KINDS = {
        "delete-access-key": lambda a: _wit.ActionKind_DeleteAccessKey(),
        "deactivate-access-key": lambda a: _wit.ActionKind_DeactivateAccessKey(),
        "delete-login-profile": lambda a: _wit.ActionKind_DeleteLoginProfile(),
        "none": lambda a: _wit.ActionKind_None_(a.why or ""),
    }

    def _log(level: str, message: str) -> None:
        _host.log(_host.Level[level.upper()], message)

    class Decide(_exports.Decide):
        """The export componentize-py looks for (named after the WIT interface)."""

        def decide(self, ctx, findings):
            plain_ctx = Context(
                policy=ctx.policy,
                params=ctx.params,
                invocation_id=ctx.invocation_id,
                rule=_kebab(ctx.rule),
                dry_run=ctx.dry_run,
                now=ctx.now,
            )
            plain = [
                Finding(
                    user=f.user,
                    credential=_kebab(f.credential),
                    age_days=f.age_days,
                    threshold_days=f.threshold_days,
                    exempt=f.exempt,
                    protected=f.protected,
                    arn=f.arn,
                    key_id=f.key_id,
                    rule=_kebab(f.rule),
                    timestamp=f.timestamp,
                    basis=_kebab(f.basis),
                    reason=f.reason,
                    stage=_kebab(f.stage),
                    due_at=f.due_at,
                    deactivated_at=f.deactivated_at,
                )
                for f in findings
            ]
            try:
                actions = decide_actions(plain_ctx, plain, _log)
            except PluginError as e:
                raise Err(str(e))  # result's err(message)
            return [_wit.Action(a.finding, _KINDS[a.kind](a), a.reason, a.notify) for a in actions]
