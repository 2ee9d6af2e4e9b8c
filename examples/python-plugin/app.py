"""deactivate-then-delete, written in Python (componentize-py).

The same plugin as the Rust example `examples/deactivate-then-delete`,
decision for decision: an expired access key is first deactivated
(reversible); once it is older than `delete_after_factor` times the policy's
threshold (default 2, so 180 days under a 90-day policy) it is deleted.
Passwords, exempt users and protected credentials are left alone, with a
reason.

Parameters (in the policy): `params = { delete_after_factor = "3" }`, a
number >= 1. Anything else fails the policy's run with a clear error.

Deleting is not granted to external plugins by default: the policy must say
`allow = ["deactivate-access-key", "delete-access-key"]`.

The file has two parts:

* the decision, over the plain classes `Context`, `Finding` and `Action`
  below: no generated bindings needed, so `python -m unittest` tests it
  natively (test_app.py);
* the glue at the bottom, which exists only inside the component: it
  converts the WIT types that componentize-py generates (`wit_world`) to and
  from the plain classes and exports the class `Decide` componentize-py
  looks for.

Texts (reasons, the error, the log line) are byte for byte those of the Rust
example, including Rust's way of writing numbers (`180`, not `180.0`) and
strings (`{:?}`).
"""

from __future__ import annotations

import bisect
import re
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
        """The value of the policy parameter `key`, if set."""
        return next((v for k, v in self.params if k == key), None)


@dataclass
class Finding:
    """One credential that breaks the policy's rule (WIT `finding`)."""

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
    optional message for the credential's owner (this plugin sends none).
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
    """The plugin cannot decide: becomes `err(message)`."""


Log = Callable[[str, str], None]  # log(level, message); level "trace".."error"


def _no_log(level: str, message: str) -> None:
    pass


# --------------------------------------------------------------------------
# The decision
# --------------------------------------------------------------------------

#: The factor used when the policy does not set `delete_after_factor`.
DEFAULT_FACTOR = 2.0


def factor(ctx: Context) -> float:
    """`delete_after_factor`, or the default; PluginError if it is not a number >= 1."""
    raw = ctx.param("delete_after_factor")
    if raw is None:
        return DEFAULT_FACTOR
    f = rust_parse_f64(raw.strip(RUST_WHITESPACE))
    if f is not None and f == f and f not in (INF, -INF) and f >= 1.0:
        return f
    raise PluginError(
        f"policy {rust_debug_str(ctx.policy)}: params.delete_after_factor = "
        f"{rust_debug_str(raw)} is not a number >= 1; "
        'use e.g. delete_after_factor = "2"'
    )


def decide_actions(ctx: Context, findings: Sequence[Finding], log: Log = _no_log) -> List[Action]:
    """Decide: one action per finding, or PluginError."""
    fac = factor(ctx)
    actions: List[Action] = []
    deletes = 0
    for i, f in enumerate(findings):
        if f.is_password():
            actions.append(Action.none(i, "this plugin only handles access keys"))
        elif f.is_upcoming():
            actions.append(Action.none(i, "not due yet"))
        elif not f.remediable():
            actions.append(Action.none(i, "exempt or protected: left alone"))
        else:
            delete_after = float(f.threshold_days) * fac
            # Rust compares `age_days as f64`: convert, do not compare int to float exactly.
            if float(f.age_days) > delete_after:
                deletes += 1
                actions.append(
                    Action.delete_access_key(i).with_reason(
                        f"{f.age_days} days old, more than {rust_f64(delete_after)} "
                        f"({rust_f64(fac)} x {f.threshold_days} days)"
                    )
                )
            else:
                actions.append(
                    Action.deactivate_access_key(i).with_reason(
                        f"{f.age_days} days old; deleted after {rust_f64(delete_after)} days"
                    )
                )
    log("info", f"{len(findings)} finding(s): {deletes} to delete, factor {rust_f64(fac)}")
    return actions


# --------------------------------------------------------------------------
# Rust's formatting and parsing, so the texts match the Rust plugin's
# --------------------------------------------------------------------------

INF = float("inf")

#: `char::is_whitespace` (Unicode White_Space), what Rust's `str::trim` strips.
RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

# What `str::parse::<f64>` accepts (besides inf/infinity/nan, which are not finite anyway).
_F64 = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def rust_parse_f64(s: str) -> Optional[float]:
    """`s.parse::<f64>().ok()`, except that inf and NaN are None (both are rejected)."""
    if _F64.fullmatch(s) is None:
        return None
    return float(s)  # correctly rounded, as Rust's


def rust_f64(x: float) -> str:
    """`format!("{}", x)` of an f64: shortest round-trip digits, never an exponent."""
    if x != x:
        return "NaN"
    if x in (INF, -INF):
        return "inf" if x > 0 else "-inf"
    s = repr(x)  # shortest round-trip digits, maybe with an exponent
    sign = "-" if s.startswith("-") else ""
    mantissa, _, exp = s.lstrip("-").partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + (int(exp) if exp else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    if not digits:
        return sign + "0"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


_BACKSLASHED = {"\0": "\\0", "\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"'}


def rust_debug_str(s: str) -> str:
    """`format!("{:?}", s)`: quoted, with Rust's escapes."""
    out = ['"']
    for c in s:
        o = ord(c)
        if c in _BACKSLASHED:
            out.append(_BACKSLASHED[c])
        elif 0x20 <= o < 0x7F:
            out.append(c)
        elif _escaped(o):
            out.append(f"\\u{{{o:x}}}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _escaped(cp: int) -> bool:
    """Whether Rust's Debug writes `cp` as `\\u{..}` (binary search in the table below)."""
    i = bisect.bisect_right(_STARTS, cp) - 1
    return i >= 0 and cp <= _ENDS[i]


# The code points Rust's Debug escapes as \u{..}: not printable (general
# category Cc Cf Cs Co Cn Zl Zp Zs, space excepted) or Grapheme_Extend, as of
# Unicode 17 (Rust 1.95). Ranges as base-36 "gap,length-1" pairs, generated
# from node's Unicode data (the same table is in examples/js-plugin/decide.js)
# and checked against the Rust plugin for every code point.
_ESCAPED_RANGES = (
    "0,v;2n,x;c,0;gi,33;8,1;6,3;7,0;1,0;k,0;68,6;4m,0;12,1;1e,1;3,19;1,0;1,1;1,1;1,8;r,3;6,g;"
    "a,a;1,0;1a,k;g,0;2t,7;1,5;2,1;1,3;w,1;1,0;u,s;2h,a;1,d;17,8;7,2;o,3;1,8;1,2;1,6;f,0;p,4;"
    "1,0;b,4;w,f;16,1k;1j,0;1,0;4,7;4,0;3,6;a,1;t,0;2,0;8,1;2,1;m,0;7,0;1,2;4,2;1,0;2,5;2,1;2"
    ",0;1,c;2,0;3,3;o,4;1,0;6,3;2,1;m,0;7,0;2,0;2,0;2,3;3,n;4,0;1,6;a,1;3,0;1,b;1,0;9,0;3,0;m"
    ",0;7,0;2,0;5,2;4,7;1,0;2,2;1,e;2,3;c,6;1,7;2,0;8,1;2,1;m,0;7,0;2,0;5,2;1,1;1,5;2,1;2,e;2"
    ",0;3,3;i,a;1,0;6,2;3,0;4,2;2,0;1,0;2,2;2,2;3,2;c,4;1,0;2,2;3,0;3,2;1,k;l,5;3,0;8,0;3,0;n"
    ",0;g,2;1,2;4,i;3,0;2,1;2,3;a,6;a,0;b,0;3,0;n,0;a,0;5,2;2,1;1,0;2,m;3,0;2,3;a,0;3,d;b,0;3"
    ",0;15,1;1,0;2,4;3,0;3,0;2,3;3,0;a,3;q,1;2,0;i,2;o,0;9,0;1,1;7,8;2,5;7,6;a,1;3,b;1c,0;2,a"
    ";8,7;d,10;2,0;1,0;5,0;o,0;1,0;a,0;2,8;1,1;5,0;1,8;a,1;4,v;o,1;r,0;1,0;1,0;e,0;10,h;1,4;1"
    ",1;5,1c;8,0;6,0;d,10;19,3;1,5;1,1;2,1;p,1;4,2;g,3;d,0;2,1;6,0;f,0;14,0;1,4;1,1;ah,0;4,1;"
    "7,0;1,0;4,1;15,0;4,1;x,0;4,1;7,0;1,0;4,1;f,0;1l,0;4,1;1v,4;t,2;q,5;2e,1;6,1;hs,0;s,2;2h,"
    "6;i,c;j,2;2,8;i,d;d,0;3,e;1g,1;1,6;8,0;2,a;9,2;a,5;a,5;b,4;a,5;2h,6;5,1;y,0;1,4;1y,9;v,3"
    ";4,1;3,3;2,0;6,6;1,2;16,1;5,a;18,3;q,5;b,2;1l,1;2,2;1k,0;1,8;1,0;2,7;6,c;a,5;a,5;e,2d;1c"
    ",9;4,2;8,0;t,8;c,1;w,3;2,5;1k,0;1,1;3,0;1,c;1c,7;2,4;f,2;1q,4;17,1;b,a;1,c;1,6;4,0;6,0;3"
    ",1;1,4;5c,1r;7q,1;6,1;12,1;6,1;8,0;1,0;1,0;1,0;v,1;1h,0;f,0;e,1;6,0;j,1;3,0;9,g;o,7;1b,g"
    ";2,1;r,0;d,2;y,1p;3w,3;ii,l;b,k;1ec,1;ah,2;2,4;19,0;1,4;1,1;1k,6;2,e;n,8;7,0;7,0;7,0;7,0"
    ";7,0;7,0;7,0;7,w;2m,x;q,0;2h,b;5y,p;g,0;15,5;g,0;2e,3;2t,4;17,0;2m,0;2e,8;1c,0;mlp,2;1j,"
    "8;9o,j;1b,3;1,9;w,1;28,1;6,7;65,j;h,0;3,0;4,0;p,1;5,3;a,5;1k,7;1w,9;c,n;d,0;12,7;p,a;1,b"
    ";u,5;1c,0;2,3;2,1;2,0;d,0;b,3;7,0;p,0;15,5;2,1;2,a;3,0;8,0;1,1;a,1;w,0;1f,0;1,2;2,1;5,1;"
    "1,0;1,n;h,1;8,a;6,1;6,1;6,8;7,0;7,0;1o,3;39,0;2,0;4,2;a,5;8mc,b;n,3;1d,6ir;a6,1;2y,11;7,"
    "b;5,4;1,0;o,0;5,0;1,0;2,0;2,0;i2,v;g,f;a,l;z,0;j,0;4,3;5,0;3r,3;4d,1;v,2;6,1;6,1;6,1;3,2"
    ";7,0;7,c;2,1;c,0;q,0;j,0;2,0;f,1;e,x;3f,4;3,3;19,2;2g,0;d,2;1,1a;19,3m;t,2;1d,f;r,3;10,8"
    ";u,4;12,9;u,0;11,3;e,15;4e,1;a,5;10,3;10,3;14,7;1g,a;c,0;f,0;7,0;2,0;b,0;f,0;7,0;2,2;1g,"
    "b;8n,8;m,9;8,n;6,0;16,0;9,1w;6,1;1,0;18,0;2,2;1,1;n,0;20,7;9,1b;j,0;2,4;x,2;r,4;r,11;1k,"
    "3;k,1;1b,e;4,0;3,0;t,9;9,6;9,6;1s,v;11,5;c,8;1i,2;t,1;r,4;q,6;4,b;7,27;21,1i;1f,c;1f,6;1"
    "6,b;a,5;12,7;o,7;2,5r;v,0;16,2;1,1;2,f;6,7;9,12;14,7;m,a;9,l;i,3;4,11;s,j;n,8;1,0;1i,e;7"
    ",3;u,0;2,1;1,b;1d,3;2,1;2,0;4,d;p,6;a,8;10,4;1,8;i,7;z,0;3,a;1g,8;1,0;8,3;2,0;g,0;k,a;i,"
    "0;s,2;2,3;6,0;2,1q;7,0;1,0;4,0;f,0;b,5;1b,0;3,c;a,7;2,0;8,1;2,1;m,0;7,0;2,0;5,2;1,0;1,0;"
    "4,1;2,1;2,2;1,b;7,r;a,0;1,1;1,0;12,0;1,0;2,e;1,0;2,2;1,0;3,0;2,12;1k,7;2,2;1,0;l,0;1,0;3"
    ",t;1c,0;2,5;1,0;2,0;1,1;1,1;4,7;a,4l;1b,0;2,5;4,1;1,1;r,z;1f,7;2,0;1,1;4,a;a,5;d,i;17,0;"
    "1,0;2,7;2,5;a,5;k,r;r,2;1,0;2,3;1,8;n,54;1b,8;1,1;1,2r;2b,b;8,1;1,1;8,0;2,0;o,0;5,0;2,5;"
    "4,0;3,8;a,1x;8,1;16,7;4,0;4,q;1,9;14,5;2,3;8,8;1,5;2,2;1a,c;1,1;9,c;21,6;a,2e;1,2;1,0;1,"
    "2f;y,d;a,5;9,0;12,d;1,0;6,9;t,2;w,o;1,6;1,1;1,22;7,0;2,0;12,k;1,8;a,5;6,0;2,0;11,3;2,0;1"
    ",0;1,6;a,5;18,3;a,6t;j,1;4,8;f,0;10,7;2,2;n,2d;1,e;1e,c;pn,2t;33,0;5,a;5g,217;2r,c;ts,g;"
    "6,o;32z,4;g7,5a0;u,b;3,2;a,1c5;ft,6;v,0;a,3;29,0;a,5;u,6;1,9;1c,6;f,9;a,0;7,0;l,4;j,bz;1"
    "m,5h;2j,4;p,1;p,17;23,4;1k,a;d,1r;4,d;5,8;5p2,14;w,2o;37,6po;4,0;7,0;2,0;83,e;1,s;3,1;1,"
    "d;4,7;b0,1s3;2z,4;d,2;9,6;a,1;1,1;1,31b;71,2;c4,5;n,e;h,2m;38,1n;6u,9;13,1;1o,4;3,l;2,6;"
    "u,3;1p,k;1u,2;1,3d;k,b;k,b;2f,8;p,3q;2d,0;1z,0;2,1;1,1;2,1;4,0;c,0;1,0;7,0;1t,0;4,1;8,0;"
    "7,0;s,0;4,0;5,0;1,2;7,0;9g,1;84,1;fm,1i;4,1d;8,0;e,0;7,vn;v,5;6,78;1q,41;19,9;7,1;a,3;2,"
    "8v;u,h;18,3;a,4;1,cv;s,3;a,5x;u,1;b,3;1,5b;v,0;3,0;2,0;7,1;5,8;2,67;7,0;4,0;2,0;f,0;5h,1"
    ";9,1b;1w,6;1,3;a,3;2,ls;1w,23;1p,5d;4,0;r,0;2,0;1,1;1,0;a,0;4,0;1,0;1,5;1,3;1,0;1,0;1,0;"
    "3,0;2,0;1,1;1,0;1,0;1,0;1,0;1,0;2,0;1,1;4,0;7,0;4,0;4,0;1,0;a,0;h,4;3,0;5,0;h,1f;2,7h;18"
    ",3;2s,b;f,1;f,0;f,0;11,9;4u,1j;t,c;18,3;9,6;2,d;6,49;rd,2;h,2;d,2;62,5;c,3;1,e;c,3;1k,7;"
    "a,5;14,7;u,1;c,3;2,d;9,12;9k,7;e,1;d,2;b,2;1l,0;1,3;g,1;c,3;a,6;43,0;2v,sk;wyo,v;3dq,1;4"
    "ge,1;5rl,e;ha,1wh;f2,15t;3t7,4;6ju,jdl1"
)


def _decode(table: str):
    starts, ends, prev = [], [], 0
    for pair in table.split(";"):
        gap, span = pair.split(",")
        start = prev + int(gap, 36)
        starts.append(start)
        ends.append(start + int(span, 36))
        prev = ends[-1] + 1
    return starts, ends


_STARTS, _ENDS = _decode(_ESCAPED_RANGES)


# --------------------------------------------------------------------------
# Glue to the component's WIT types. componentize-py generates `wit_world`
# when it builds the component; natively (the unit tests) it does not exist
# and nothing below is defined.
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
