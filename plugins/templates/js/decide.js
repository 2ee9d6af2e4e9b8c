// {{name}}: the decision, in plain JavaScript. Change this file.
//
// What it decides, for each finding of its policy:
//
// - a remediable access key (not exempt, not protected): deactivate it
//   (reversible: the key can be activated again);
// - an exempt user or a protected credential: `none`, with a reason;
// - a password: `none`, with a reason (this plugin handles access keys only).
//
// Every finding the host hands over already breaks the policy's rule (an
// access key older than the threshold, or a credential unused that long), so
// there is no age check here.
//
// This module imports nothing from the WIT, so `node --test` runs it
// natively (test.mjs); app.js is the glue the component exports. The values
// are shaped as the component bindings hand them over (see wit/plugin.wit):
//
//   ctx      { invocationId, policy, rule: 'cis-1-3' | 'cis-1-4', dryRun, now,
//              params: [[key, value], ...] }
//   finding  { user, arn, credential: 'password' | 'access-key-1' | 'access-key-2', keyId,
//              rule, timestamp, basis, ageDays: BigInt (s64), thresholdDays: number,
//              reason, exempt, protected }
//   action   { finding: index, kind: { tag: 'deactivate-access-key' } | { tag: 'none', val: why },
//              reason: string | undefined }
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

/**
 * Decide: at most one action per finding (by index); throw PluginError to
 * fail the policy's run. `log(level, message)`: level 'trace' | 'debug' |
 * 'info' | 'warn' | 'error'.
 */
export function decideActions(ctx, findings, log = () => {}) {
  const actions = findings.map((f, i) => {
    if (isPassword(f)) {
      return { finding: i, kind: { tag: 'none', val: 'passwords are left alone by this plugin' }, reason: undefined };
    }
    if (!remediable(f)) {
      return { finding: i, kind: { tag: 'none', val: 'exempt or protected: left alone' }, reason: undefined };
    }
    return {
      finding: i,
      kind: { tag: 'deactivate-access-key' },
      reason: `${f.ageDays} days old (threshold ${f.thresholdDays})`,
    };
  });
  const deactivated = actions.filter((a) => a.kind.tag === 'deactivate-access-key').length;
  log('info', `${findings.length} finding(s): ${deactivated} to deactivate`);
  return actions;
}
