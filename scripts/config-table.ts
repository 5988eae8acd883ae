#!/usr/bin/env bun
/**
 * Writes the README's configuration table from the key table (src/config/keys.ts).
 *
 * Is: `bun scripts/config-table.ts` rewrites the lines between the `config-keys:begin` and
 * `config-keys:end` markers of README.md; test/unit/config-keys.test.ts fails when they differ.
 * Is not: documentation of its own (the text is each key's `doc` in keys.ts).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { configTable } from "../src/config/keys.ts";

const README = new URL("../README.md", import.meta.url).pathname;
const BEGIN = /<!-- config-keys:begin[^>]*-->\n/;
const END = "<!-- config-keys:end -->";

/** README text with the generated table between the markers. */
export function withTable(text: string): string {
  const b = BEGIN.exec(text);
  const e = text.indexOf(END);
  if (!b || e < b.index) throw new Error("README.md lacks the config-keys markers");
  return text.slice(0, b.index + b[0].length) + configTable() + "\n" + text.slice(e);
}

if (import.meta.main) {
  const text = readFileSync(README, "utf8");
  const next = withTable(text);
  if (next !== text) writeFileSync(README, next);
  console.log(next === text ? "README config table is up to date" : "README config table rewritten");
}
