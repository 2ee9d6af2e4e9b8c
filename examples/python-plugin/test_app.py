"""Native unit tests of app.py: no wasm, no componentize-py needed.

    python3 -m unittest -v test_app.py      # in this directory

The decision is tested through `decide_actions` over the plain classes of
app.py. `GlueTest` also checks the glue to the WIT types against the real
generated bindings when componentize-py is available (from
$ENGINE_PY_TOOLCHAIN or PATH); without it, it is skipped.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from app import (
    Action,
    Context,
    Finding,
    PluginError,
    decide_actions,
    rust_debug_str,
    rust_f64,
)

HERE = Path(__file__).resolve().parent


def key(user, age=100, **kw):
    return Finding(user=user, credential="access-key-1", age_days=age, **kw)


def password(user, **kw):
    return Finding(user=user, credential="password", rule="cis-1-3", basis="password-last-used", **kw)


def findings():
    return [
        key("young", age=100),
        key("old", age=181),
        key("edge", age=180),
        password("pw"),
        key("vip", age=500, exempt=True),
    ]


def run(params=(), fs=None, policy="test-policy"):
    logs = []
    ctx = Context(policy=policy, params=sorted(params))
    actions = decide_actions(ctx, findings() if fs is None else fs, lambda lvl, msg: logs.append((lvl, msg)))
    return actions, logs


def summary(actions):
    return [(a.finding, a.kind) for a in actions]


class DecideTest(unittest.TestCase):
    def test_deactivates_then_deletes_past_twice_the_threshold(self):
        actions, logs = run()
        self.assertEqual(
            summary(actions),
            [
                (0, "deactivate-access-key"),
                (1, "delete-access-key"),
                (2, "deactivate-access-key"),
                (3, "none"),
                (4, "none"),
            ],
        )
        self.assertEqual(logs, [("info", "5 finding(s): 1 to delete, factor 2")])

    def test_texts_are_those_of_the_rust_plugin(self):
        actions, _ = run()
        self.assertEqual(actions[0].reason, "100 days old; deleted after 180 days")
        self.assertEqual(actions[1].reason, "181 days old, more than 180 (2 x 90 days)")
        self.assertEqual(actions[3], Action(3, "none", why="this plugin only handles access keys"))
        self.assertEqual(actions[4], Action(4, "none", why="exempt or protected: left alone"))

    def test_upcoming_is_not_due_yet(self):
        actions, _ = run(fs=[key("soon", age=85, stage="upcoming"), key("vip", age=85, stage="upcoming", exempt=True)])
        self.assertEqual(actions, [Action(0, "none", why="not due yet"), Action(1, "none", why="not due yet")])

    def test_protected_is_left_alone(self):
        actions, _ = run(fs=[key("<root_account>", age=900, protected=True)])
        self.assertEqual(actions, [Action(0, "none", why="exempt or protected: left alone")])

    def test_factor_is_a_parameter(self):
        actions, logs = run([("delete_after_factor", "1")])
        self.assertEqual(
            summary(actions)[:3],
            [(0, "delete-access-key"), (1, "delete-access-key"), (2, "delete-access-key")],
        )
        self.assertEqual(logs, [("info", "5 finding(s): 3 to delete, factor 1")])

    def test_fractional_factor(self):
        actions, logs = run([("delete_after_factor", " 2.5 ")])
        self.assertEqual(actions[1].reason, "181 days old; deleted after 225 days")
        self.assertEqual(logs[0][1], "5 finding(s): 0 to delete, factor 2.5")

    def test_a_bad_factor_is_an_error(self):
        for bad in ["0.5", "", "two", "inf", "NaN", "1e999", "0x10", "1_0", "-3"]:
            with self.subTest(bad=bad), self.assertRaises(PluginError) as e:
                run([("delete_after_factor", bad)])
            self.assertIn("delete_after_factor", str(e.exception))

    def test_the_error_message(self):
        with self.assertRaises(PluginError) as e:
            run([("delete_after_factor", "0.5")], policy="old-keys")
        self.assertEqual(
            str(e.exception),
            'policy "old-keys": params.delete_after_factor = "0.5" is not a number >= 1; '
            'use e.g. delete_after_factor = "2"',
        )

    def test_rust_number_syntax(self):
        for ok, value in [("+2", "2"), ("2.", "2"), (".5e1", "5"), ("1E1", "10"), ("\t1.5\n", "1.5")]:
            with self.subTest(ok=ok):
                _, logs = run([("delete_after_factor", ok)], fs=[])
                self.assertEqual(logs, [("info", f"0 finding(s): 0 to delete, factor {value}")])

    def test_no_findings(self):
        self.assertEqual(run(fs=[]), ([], [("info", "0 finding(s): 0 to delete, factor 2")]))


class RustFormatTest(unittest.TestCase):
    def test_f64_display(self):
        for x, s in [
            (180.0, "180"),
            (2.5, "2.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e-7, "0.0000001"),
            (1.5e16, "15000000000000000"),
            (1e21, "1000000000000000000000"),
            (float("inf"), "inf"),
            (-0.0, "-0"),
        ]:
            self.assertEqual(rust_f64(x), s)

    def test_debug_str(self):
        self.assertEqual(rust_debug_str('a"b\\c\n\t\0'), '"a\\"b\\\\c\\n\\t\\0"')
        self.assertEqual(rust_debug_str("é日本\u200b\u0301\x7f"), '"é日本\\u{200b}\\u{301}\\u{7f}"')


def _componentize_py():
    toolchain = os.environ.get("ENGINE_PY_TOOLCHAIN")
    if toolchain:
        exe = Path(toolchain) / "componentize-py"
        return str(exe) if exe.exists() else None
    return shutil.which("componentize-py")


def _wit_dir():
    for candidate in [HERE / "wit", HERE / "../../plugins/sdk/wit/v0.2.0"]:
        if candidate.is_dir():
            return candidate
    return None


@unittest.skipUnless(sys.version_info >= (3, 11), "the generated bindings need Python 3.11+")
@unittest.skipUnless(_componentize_py() and _wit_dir(), "componentize-py or the WIT not found")
class GlueTest(unittest.TestCase):
    """The glue, against bindings generated by `componentize-py bindings`."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        subprocess.run(
            [_componentize_py(), "-d", str(_wit_dir()), "-w", "plugin", "bindings", cls.tmp.name],
            check=True,
            capture_output=True,
        )
        sys.path.insert(0, cls.tmp.name)
        spec = importlib.util.spec_from_file_location("app_with_bindings", HERE / "app.py")
        cls.app = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = cls.app  # dataclasses look their module up
        spec.loader.exec_module(cls.app)
        from wit_world.imports import host, types

        cls.host, cls.types = host, types

    @classmethod
    def tearDownClass(cls):
        sys.path.remove(cls.tmp.name)
        gone = ("wit_world", "componentize_py_types", "componentize_py_async_support", "app_with_bindings")
        for name in [m for m in sys.modules if m.split(".")[0] in gone]:
            del sys.modules[name]
        cls.tmp.cleanup()

    def call(self, params, wit_findings):
        t = self.types
        ctx = t.Context("p/0", "old-keys", t.Rule.CIS_1_4, False, "2025-01-01T00:00:00Z", params)
        logs = []
        original = self.host.log
        self.host.log = lambda level, msg: logs.append((level, msg))
        try:
            return self.app.Decide().decide(ctx, wit_findings), logs
        finally:
            self.host.log = original

    def finding(self, user, credential, age, exempt=False, stage=None):
        t = self.types
        return t.Finding(user, "arn:aws:iam::1:user/" + user, credential, None, t.Rule.CIS_1_4,
                         "2024-09-23T00:00:00Z", t.Basis.KEY_LAST_ROTATED, age, 90, "old", exempt, False,
                         stage or t.Stage.DUE, "2024-12-22T00:00:00Z", None)

    def test_glue_maps_both_ways(self):
        t = self.types
        fs = [
            self.finding("young", t.Credential.ACCESS_KEY_1, 100),
            self.finding("old", t.Credential.ACCESS_KEY_2, 181),
            self.finding("pw", t.Credential.PASSWORD, 500),
            self.finding("vip", t.Credential.ACCESS_KEY_1, 500, exempt=True),
            self.finding("soon", t.Credential.ACCESS_KEY_1, 85, stage=t.Stage.UPCOMING),
        ]
        actions, logs = self.call([], fs)
        self.assertEqual(
            actions,
            [
                t.Action(0, t.ActionKind_DeactivateAccessKey(), "100 days old; deleted after 180 days", None),
                t.Action(1, t.ActionKind_DeleteAccessKey(), "181 days old, more than 180 (2 x 90 days)", None),
                t.Action(2, t.ActionKind_None_("this plugin only handles access keys"), None, None),
                t.Action(3, t.ActionKind_None_("exempt or protected: left alone"), None, None),
                t.Action(4, t.ActionKind_None_("not due yet"), None, None),
            ],
        )
        self.assertEqual(logs, [(self.host.Level.INFO, "5 finding(s): 1 to delete, factor 2")])

    def test_glue_err(self):
        from componentize_py_types import Err

        with self.assertRaises(Err) as e:
            self.call([("delete_after_factor", "0.5")], [])
        self.assertIn("delete_after_factor", e.exception.value)


if __name__ == "__main__":
    unittest.main()
