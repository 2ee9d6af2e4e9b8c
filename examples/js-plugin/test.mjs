// Native unit tests of decide.js (and of the glue in app.js): no wasm needed.
//
//   node --test test.mjs        # or: npm test
//
// Values are shaped as the component bindings hand them over: ageDays is a
// BigInt, enums are kebab-case strings, variants { tag, val }.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { register } from 'node:module';

import { decideActions, ESCAPED_RANGES, PluginError, rustDebugStr, rustF64 } from './decide.js';

const key = (user, ageDays = 100n, extra = {}) => ({
  user,
  arn: `arn:aws:iam::123456789012:user/${user}`,
  credential: 'access-key-1',
  keyId: undefined,
  rule: 'cis-1-4',
  timestamp: '2024-09-23T00:00:00Z',
  basis: 'key-last-rotated',
  ageDays,
  thresholdDays: 90,
  reason: 'old',
  exempt: false,
  protected: false,
  stage: 'due',
  dueAt: '2024-12-22T00:00:00Z',
  deactivatedAt: undefined,
  ...extra,
});
const password = (user) => key(user, 100n, { credential: 'password', rule: 'cis-1-3', basis: 'password-last-used' });

const findings = () => [
  key('young', 100n),
  key('old', 181n),
  key('edge', 180n),
  password('pw'),
  key('vip', 500n, { exempt: true }),
];

const context = (params = [], policy = 'test-policy') => ({
  invocationId: 'test-invocation',
  policy,
  rule: 'cis-1-4',
  dryRun: false,
  now: '2025-01-01T00:00:00Z',
  params: [...params].sort(),
});

function run(params = [], fs = findings(), policy = 'test-policy') {
  const logs = [];
  const actions = decideActions(context(params, policy), fs, (level, msg) => logs.push([level, msg]));
  return { actions, logs };
}

const summary = (actions) => actions.map((a) => [a.finding, a.kind.tag]);

test('deactivates, then deletes past twice the threshold', () => {
  const { actions, logs } = run();
  assert.deepEqual(summary(actions), [
    [0, 'deactivate-access-key'],
    [1, 'delete-access-key'],
    [2, 'deactivate-access-key'],
    [3, 'none'],
    [4, 'none'],
  ]);
  assert.deepEqual(logs, [['info', '5 finding(s): 1 to delete, factor 2']]);
});

test('texts are those of the Rust plugin', () => {
  const { actions } = run();
  assert.equal(actions[0].reason, '100 days old; deleted after 180 days');
  assert.equal(actions[1].reason, '181 days old, more than 180 (2 x 90 days)');
  assert.deepEqual(actions[3], { finding: 3, kind: { tag: 'none', val: 'this plugin only handles access keys' }, reason: undefined });
  assert.deepEqual(actions[4], { finding: 4, kind: { tag: 'none', val: 'exempt or protected: left alone' }, reason: undefined });
});

test('upcoming is not due yet, exempt or not', () => {
  const { actions } = run([], [
    key('soon', 85n, { stage: 'upcoming' }),
    key('vip', 85n, { stage: 'upcoming', exempt: true }),
  ]);
  assert.deepEqual(actions, [
    { finding: 0, kind: { tag: 'none', val: 'not due yet' }, reason: undefined },
    { finding: 1, kind: { tag: 'none', val: 'not due yet' }, reason: undefined },
  ]);
});

test('protected is left alone', () => {
  const { actions } = run([], [key('<root_account>', 900n, { protected: true })]);
  assert.deepEqual(summary(actions), [[0, 'none']]);
  assert.equal(actions[0].kind.val, 'exempt or protected: left alone');
});

test('the factor is a parameter', () => {
  const { actions, logs } = run([['delete_after_factor', '1']]);
  assert.deepEqual(summary(actions).slice(0, 3), [
    [0, 'delete-access-key'],
    [1, 'delete-access-key'],
    [2, 'delete-access-key'],
  ]);
  assert.deepEqual(logs, [['info', '5 finding(s): 3 to delete, factor 1']]);
});

test('a fractional factor', () => {
  const { actions, logs } = run([['delete_after_factor', ' 2.5 ']]);
  assert.equal(actions[1].reason, '181 days old; deleted after 225 days');
  assert.equal(logs[0][1], '5 finding(s): 0 to delete, factor 2.5');
});

test('a bad factor is an error', () => {
  for (const bad of ['0.5', '', 'two', 'inf', 'Infinity', 'NaN', '1e999', '0x10', '1_0', '-3']) {
    assert.throws(() => run([['delete_after_factor', bad]]), (e) => e instanceof PluginError && e.message.includes('delete_after_factor'), bad);
  }
});

test('the error message', () => {
  assert.throws(() => run([['delete_after_factor', '0.5']], findings(), 'old-keys'), {
    message: 'policy "old-keys": params.delete_after_factor = "0.5" is not a number >= 1; use e.g. delete_after_factor = "2"',
  });
});

test("Rust's number syntax", () => {
  for (const [ok, shown] of [['+2', '2'], ['2.', '2'], ['.5e1', '5'], ['1E1', '10'], ['\t1.5\n', '1.5']]) {
    assert.deepEqual(run([['delete_after_factor', ok]], []).logs, [['info', `0 finding(s): 0 to delete, factor ${shown}`]], ok);
  }
});

test('no findings', () => {
  assert.deepEqual(run([], []), { actions: [], logs: [['info', '0 finding(s): 0 to delete, factor 2']] });
});

test("Rust's f64 Display", () => {
  for (const [x, s] of [[180, '180'], [2.5, '2.5'], [0.1 + 0.2, '0.30000000000000004'], [1e-7, '0.0000001'],
    [1.5e16, '15000000000000000'], [1e21, '1000000000000000000000'], [Infinity, 'inf'], [-0, '-0']]) {
    assert.equal(rustF64(x), s);
  }
});

test("Rust's str Debug", () => {
  assert.equal(rustDebugStr('a"b\\c\n\t\0'), '"a\\"b\\\\c\\n\\t\\0"');
  assert.equal(rustDebugStr('é日本\u200b\u0301\x7f'), '"é日本\\u{200b}\\u{301}\\u{7f}"');
});

test('the escape table matches Unicode 17', { skip: process.versions.unicode !== '17.0' && `node has Unicode ${process.versions.unicode}` }, () => {
  const re = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}\p{Grapheme_Extend}]/u;
  const ranges = [];
  let start = -1;
  for (let cp = 0; cp <= 0x110000; cp++) {
    const m = cp < 0x110000 && cp !== 0x20 && re.test(String.fromCodePoint(cp));
    if (m && start < 0) start = cp;
    if (!m && start >= 0) {
      ranges.push([start, cp - 1]);
      start = -1;
    }
  }
  let prev = 0;
  const table = ranges.map(([a, b]) => {
    const pair = `${(a - prev).toString(36)},${(b - a).toString(36)}`;
    prev = b + 1;
    return pair;
  });
  assert.equal(ESCAPED_RANGES, table.join(';'));
});

test('glue: app.js maps ok, err and log', async () => {
  // Resolve the component's import to a stand-in that records log lines.
  globalThis.hostLog = [];
  const host = 'export const log = (level, message) => globalThis.hostLog.push([level, message]);';
  register(`data:text/javascript,${encodeURIComponent(`
    export async function resolve(specifier, context, next) {
      if (specifier === 'engine:plugin/host@0.2.0') {
        return { url: ${JSON.stringify(`data:text/javascript,${encodeURIComponent(host)}`)}, shortCircuit: true };
      }
      return next(specifier, context);
    }`)}`);
  const { decide } = await import('./app.js');
  const actions = decide.decide(context(), findings());
  assert.deepEqual(summary(actions), summary(run().actions));
  assert.deepEqual(globalThis.hostLog, [['info', '5 finding(s): 1 to delete, factor 2']]);
  assert.throws(() => decide.decide(context([['delete_after_factor', '0.5']]), []), (e) => typeof e === 'string' && e.startsWith('policy "test-policy"'));
});
