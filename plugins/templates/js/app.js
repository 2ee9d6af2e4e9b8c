// The component's glue: the export `decide` of engine:plugin@0.2.0, mapped
// to decide.js (the decision, tested natively by test.mjs). No need to
// change it.
//
// How the WIT types look here (componentize-js): records are objects with
// camelCase fields; enums are kebab-case strings ('access-key-1', 'info');
// `s64` (ageDays) is a BigInt; an `option` is the value or undefined; a
// variant is { tag, val }. For the result: returning the list is `ok`,
// throwing a *string* is `err(string)` (throwing an Error object traps).
import { log } from 'engine:plugin/host@0.2.0';
import { decideActions, PluginError } from './decide.js';

export const decide = {
  decide(ctx, findings) {
    try {
      return decideActions(ctx, findings, log);
    } catch (e) {
      if (e instanceof PluginError) {
        throw e.message; // -> err(message)
      }
      throw e;
    }
  },
};
