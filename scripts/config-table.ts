#!/usr/bin/env bun
/**
 * Writes the README's generated tables: the configuration keys (src/config/keys.ts) and the
 * environment switches users may set (src/util/env.ts).
 *
 * Is: `bun scripts/config-table.ts` rewrites the lines between the `config-keys:begin` and
 * `config-keys:end` markers, and between `env-switches:begin` and `env-switches:end`, of
 * README.md; test/unit/config-keys.test.ts and env-switches.test.ts fail when they differ.
 * Is not: documentation of its own (the text is each key's and switch's `doc`).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { configTable } from "../src/config/keys.ts";
import { envTable } from "../src/util/env.ts";

const README = new URL("../README.md", import.meta.url).pathname;

/** README text with `table` between the `<name>:begin` and `<name>:end` markers. */
function between(text: string, name: string, table: string): string {
  const b = new RegExp(`<!-- ${name}:begin[^>]*-->\n`).exec(text);
  const end = `<!-- ${name}:end -->`;
  const e = text.indexOf(end);
  if (!b || e < b.index) throw new Error(`README.md lacks the ${name} markers`);
  return text.slice(0, b.index + b[0].length) + table + "\n" + text.slice(e);
}

/** README text with the generated configuration table between the markers. */
export function withTable(text: string): string {
  return between(text, "config-keys", configTable());
}

/** README text with the generated environment switch table between the markers. */
export function withEnvTable(text: string): string {
  return between(text, "env-switches", envTable());
}

if (import.meta.main) {
  const text = readFileSync(README, "utf8");
  const next = withEnvTable(withTable(text));
  if (next !== text) writeFileSync(README, next);
  console.log(next === text ? "README tables are up to date" : "README tables rewritten");
}
