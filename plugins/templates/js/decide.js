// {{name}}: the decision, in plain JavaScript. Change this file.
//
// What it decides, for each finding of its policy:
//
// - a remediable access key (not exempt, not protected): deactivate it
//   (reversible: the key can be activated again);
// - an access key not due yet (stage 'upcoming', under a policy with
//   `warn_before_days`): `none`, with a message to its owner saying when it
//   will be deactivated (the host sends it where `[notifications]` says);
// - a key the engine deactivated earlier (stage 'deactivated'): `none`;
// - an exempt user or a protected credential: `none`, with a reason;
// - a password: `none`, with a reason (this plugin handles access keys only).
//
// Every finding the host hands over that is 'due' already breaks the
// policy's rule (an access key older than the threshold, or a credential
// unused that long), so there is no age check here.
//
// This module imports nothing from the WIT, so `node --test` runs it
// natively (test.mjs); app.js is the glue the component exports. The values
// are shaped as the component bindings hand them over (see wit/plugin.wit):
//
//   ctx      { invocationId, policy, rule: 'cis-1-3' | 'cis-1-4', dryRun, now,
//              params: [[key, value], ...] }
//   finding  { user, arn, credential: 'password' | 'access-key-1' | 'access-key-2', keyId,
//              rule, timestamp, basis, ageDays: BigInt (s64), thresholdDays: number,
//              reason, exempt, protected, stage: 'upcoming' | 'due' | 'deactivated',
//              dueAt, deactivatedAt: string | undefined }
//   action   { finding: index, kind: { tag: 'deactivate-access-key' } | { tag: 'none', val: why },
//              reason: string | undefined, notify: string | undefined (a message to the
//              credential's owner, sent by the host at most once per credential and stage) }
//
// Inside the component there is no clock, filesystem, network or console:
// use `log(level, message)` and `ctx.now`.

/** The plugin cannot decide (e.g. a bad parameter): app.js turns it into `err(message)`. */
export class PluginError extends Error {}

/** The value of the policy parameter `key` (`params = { key = "value" }`), if set. */
export function param(ctx, key) {
  const found = ctx.params.find(([k]) => k === key);
  return found === undefined ? undefined : found[1];
}

/** Whether the host may act on this finding at all (not exempt, not protected). */
export const remediable = (f) => !f.exempt && !f.protected;
export const isPassword = (f) => f.credential === 'password';
/** Not due yet: the host refuses every action on it but `none` (which may notify its owner). */
export const isUpcoming = (f) => f.stage === 'upcoming';
/** An access key the engine deactivated earlier (at `deactivatedAt`), still inactive. */
export const isDeactivated = (f) => f.stage === 'deactivated';

const none = (i, why, notify = undefined) => ({ finding: i, kind: { tag: 'none', val: why }, reason: undefined, notify });

/**
 * The message to the owner of an upcoming access key: the host's reason
 * (which says old or unused, as the policy's rule has it) and the day.
 */
export function warning(f) {
  return `${f.user}'s ${f.reason}: it will be deactivated on ${f.dueAt.slice(0, 10)}`;
}

/**
 * Decide: at most one action per finding (by index); throw PluginError to
 * fail the policy's run. `log(level, message)`: level 'trace' | 'debug' |
 * 'info' | 'warn' | 'error'.
 */
export function decideActions(ctx, findings, log = () => {}) {
  const actions = findings.map((f, i) => {
    if (isPassword(f)) {
      return none(i, 'passwords are left alone by this plugin');
    }
    if (!remediable(f)) {
      return none(i, 'exempt or protected: left alone');
    }
    if (isUpcoming(f)) {
      return none(i, 'not due yet', warning(f));
    }
    if (isDeactivated(f)) {
      return none(i, 'deactivated already');
    }
    return {
      finding: i,
      kind: { tag: 'deactivate-access-key' },
      reason: `${f.ageDays} days old (threshold ${f.thresholdDays})`,
      notify: undefined,
    };
  });
  const deactivated = actions.filter((a) => a.kind.tag === 'deactivate-access-key').length;
  log('info', `${findings.length} finding(s): ${deactivated} to deactivate`);
  return actions;
}
