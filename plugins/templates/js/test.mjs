// Native unit tests of decide.js (and of the glue in app.js): no wasm needed.
//
//   node --test test.mjs        # or: npm test
//
// Values are shaped as the component bindings hand them over: ageDays is a
// BigInt, enums are kebab-case strings, variants { tag, val }.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { register } from 'node:module';

import { decideActions } from './decide.js';

const key = (user, extra = {}) => ({
  user,
  arn: `arn:aws:iam::123456789012:user/${user}`,
  credential: 'access-key-1',
  keyId: undefined,
  rule: 'cis-1-4',
  timestamp: '2024-09-23T00:00:00Z',
  basis: 'key-last-rotated',
  ageDays: 100n,
  thresholdDays: 90,
  reason: 'old',
  exempt: false,
  protected: false,
  stage: 'due',
  dueAt: '2024-12-22T00:00:00Z',
  deactivatedAt: undefined,
  ...extra,
});

const context = (params = []) => ({
  invocationId: 'test-invocation',
  policy: 'test-policy',
  rule: 'cis-1-4',
  dryRun: false,
  now: '2025-01-01T00:00:00Z',
  params,
});

const findings = () => [
  key('alice', { ageDays: 120n }),
  key('vip', { exempt: true }),
  key('<root_account>', { protected: true }),
  key('bob', { credential: 'password', rule: 'cis-1-3', basis: 'password-last-used' }),
  key('carol', { credential: 'access-key-2', ageDays: 400n }),
];

test('deactivates remediable keys only', () => {
  const logs = [];
  const actions = decideActions(context(), findings(), (level, msg) => logs.push([level, msg]));
  assert.deepEqual(actions, [
    { finding: 0, kind: { tag: 'deactivate-access-key' }, reason: '120 days old (threshold 90)', notify: undefined },
    { finding: 1, kind: { tag: 'none', val: 'exempt or protected: left alone' }, reason: undefined, notify: undefined },
    { finding: 2, kind: { tag: 'none', val: 'exempt or protected: left alone' }, reason: undefined, notify: undefined },
    { finding: 3, kind: { tag: 'none', val: 'passwords are left alone by this plugin' }, reason: undefined, notify: undefined },
    { finding: 4, kind: { tag: 'deactivate-access-key' }, reason: '400 days old (threshold 90)', notify: undefined },
  ]);
  assert.deepEqual(logs, [['info', '5 finding(s): 2 to deactivate']]);
});

test('upcoming keys are warned, not touched', () => {
  const actions = decideActions(context(), [
    key('dave', {
      ageDays: 85n,
      stage: 'upcoming',
      dueAt: '2025-01-06T00:00:00Z',
      reason: 'access key 1 last rotated 2024-10-08, 85 days ago (more than 90 on 2025-01-06)',
    }),
    key('vip', { ageDays: 85n, stage: 'upcoming', exempt: true }),
    key('erin', { ageDays: 200n, stage: 'deactivated', deactivatedAt: '2024-12-01T00:00:00Z' }),
  ]);
  assert.deepEqual(actions, [
    {
      finding: 0,
      kind: { tag: 'none', val: 'not due yet' },
      reason: undefined,
      notify:
        "dave's access key 1 last rotated 2024-10-08, 85 days ago (more than 90 on 2025-01-06): it will be deactivated on 2025-01-06",
    },
    { finding: 1, kind: { tag: 'none', val: 'exempt or protected: left alone' }, reason: undefined, notify: undefined },
    { finding: 2, kind: { tag: 'none', val: 'deactivated already' }, reason: undefined, notify: undefined },
  ]);
});

test('no findings', () => {
  const logs = [];
  assert.deepEqual(decideActions(context(), [], (level, msg) => logs.push([level, msg])), []);
  assert.deepEqual(logs, [['info', '0 finding(s): 0 to deactivate']]);
});

test('glue: app.js maps the call and the log', async () => {
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
  assert.deepEqual(decide.decide(context(), findings()), decideActions(context(), findings()));
  assert.deepEqual(globalThis.hostLog, [['info', '5 finding(s): 2 to deactivate']]);
});
