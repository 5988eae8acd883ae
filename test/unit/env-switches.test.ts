/**
 * The BUCKETFS_* environment switches (src/util/env.ts) and what must not drift from them:
 * the README's list of the ones users may set, and the rule that no other module reads them.
 *
 * Is: pure tests over the source tree's text and the table. Is not: a test of what each
 * switch does (the tests of the modules that use them).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ENV_SWITCHES, envSwitch, envTable } from "../../src/util/env.ts";
import { withEnvTable } from "../../scripts/config-table.ts";

const REPO = new URL("../..", import.meta.url).pathname;
const SRC = join(REPO, "src");

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

describe("environment switches: one table, one reader", () => {
  test("README's list is the generated one and names exactly the users' switches", () => {
    const readme = readFileSync(join(REPO, "README.md"), "utf8");
    expect(withEnvTable(readme)).toBe(readme);
    for (const [name, spec] of Object.entries(ENV_SWITCHES)) {
      if (spec.audience === "users") expect(envTable()).toContain(`| \`${name}\` |`);
      else expect(envTable()).not.toContain(name);
    }
  });

  test("no module but util/env.ts reads a BUCKETFS_* variable, and every one src names is in the table", () => {
    const readers: string[] = [];
    const named = new Set<string>();
    for (const file of sources(SRC)) {
      const text = readFileSync(file, "utf8");
      for (const m of text.matchAll(/BUCKETFS_[A-Z0-9_]+/g)) named.add(m[0]);
      if (file.endsWith("/util/env.ts")) continue;
      if (/(process\.env|Bun\.env)(\.BUCKETFS_|\[\s*["'`]BUCKETFS_)/.test(text)) readers.push(file.slice(REPO.length));
    }
    expect(readers).toEqual([]);
    expect([...named].filter((n) => !(n in ENV_SWITCHES))).toEqual([]);
  });
});

describe("envSwitch", () => {
  const saved = process.env.BUCKETFS_SPLICE;
  afterEach(() => {
    if (saved === undefined) delete process.env.BUCKETFS_SPLICE;
    else process.env.BUCKETFS_SPLICE = saved;
  });

  test("an empty value counts as unset; any other value is returned as it is", () => {
    delete process.env.BUCKETFS_SPLICE;
    expect(envSwitch("BUCKETFS_SPLICE")).toBeUndefined();
    process.env.BUCKETFS_SPLICE = "";
    expect(envSwitch("BUCKETFS_SPLICE")).toBeUndefined();
    process.env.BUCKETFS_SPLICE = "0";
    expect(envSwitch("BUCKETFS_SPLICE")).toBe("0");
  });
});
