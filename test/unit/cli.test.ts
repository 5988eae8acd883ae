/**
 * The command line (src/cli/main.ts) as a user meets it: --help lists every subcommand, and
 * each subcommand that reads the config takes its path as --config FILE or as a positional
 * argument.
 *
 * Is: runs `bun src/cli/main.ts` as a child process with configs in a temp dir; nothing
 * here mounts or talks to S3 (the configs are missing or only checked). Is not: a daemon test.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), "bucketfs-cli-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function cli(...args: string[]): { rc: number; out: string; err: string } {
  const p = Bun.spawnSync([process.execPath, MAIN, ...args], { env: { ...process.env, NO_COLOR: "1" } });
  // eslint-disable-next-line no-control-regex
  const plain = (b: Buffer) => b.toString().replace(/\u001b\[[0-9;]*m/g, "");
  return { rc: p.exitCode ?? -1, out: plain(p.stdout), err: plain(p.stderr) };
}

const good = join(dir, "good.conf");
writeFileSync(good, "[s]\nbucket = cli-bucket\nmetadata_ttl = 42\n");
const missing = join(dir, "missing.conf");

describe("--help", () => {
  test("lists every subcommand", () => {
    const r = cli("--help");
    expect(r.rc).toBe(0);
    for (const c of ["mount", "check-config", "sync", "status", "verify"]) expect(r.out).toMatch(new RegExp(`^\\s+${c}\\s+\\S`, "m"));
  });

  test("a subcommand's help shows the positional config path", () => {
    for (const c of ["mount", "check-config", "sync", "status", "verify"]) {
      const r = cli(c, "--help");
      expect(r.rc).toBe(0);
      expect(r.out).toContain(`bucketfs ${c} [OPTIONS] [FILE]`);
      expect(r.out).toContain("--config");
    }
  });
});

describe("the config path", () => {
  test("check-config FILE reads FILE (as in conf.sample)", () => {
    const r = cli("check-config", good);
    expect(r.rc).toBe(0);
    expect(r.out).toContain(`${good}: 1 bucket(s)`);
    expect(r.out).toMatch(/metadata_ttl\s+42s/);
  });

  test("check-config --config FILE reads FILE", () => {
    const r = cli("check-config", "--config", good);
    expect(r.rc).toBe(0);
    expect(r.out).toContain(`${good}: 1 bucket(s)`);
  });

  for (const c of ["check-config", "status", "sync", "verify", "mount"]) {
    test(`${c} FILE and ${c} --config FILE both read FILE (a missing one is named)`, () => {
      for (const args of [[c, missing], [c, "--config", missing]]) {
        const r = cli(...args);
        expect(r.rc).toBe(1);
        expect(r.err).toContain(`bucketfs: config error: ${missing}: cannot read config file: no such file`);
      }
    });
  }

  test("two different paths are refused; the same path twice is fine", () => {
    const r = cli("check-config", "--config", good, missing);
    expect(r.rc).toBe(1);
    expect(r.err).toContain("two config files given");
    expect(cli("check-config", "--config", good, good).rc).toBe(0);
  });

  test("an unknown command is refused with the list of commands", () => {
    const r = cli("frob");
    expect(r.rc).toBe(1);
    expect(r.err).toContain('bucketfs: unknown command "frob" (commands: mount, check-config, sync, status, verify; see --help)');
  });
});

describe("check-config refuses each bad value of the issue, naming file, line and key, never echoing it raw", () => {
  const cases: [string, string, string][] = [
    ["region ESC", "region", "us-east-1\u001b]0;pwned\u0007"],
    ["region NUL", "region", "us-east\u00001"],
    ["workdir NUL", "workdir", "/bad-bucket/work\u0000dir"],
    ["bucket a..b", "bucket", "a..b"],
    ["bucket IP", "bucket", "192.168.1.1"],
    ["cachepath /", "cachepath", "/"],
    ["cachepath /proc/self", "cachepath", "/proc/self"],
    ["lastuploadfile 300 chars", "lastuploadfile", "x".repeat(300)],
  ];
  for (const [name, key, value] of cases) {
    test(name, () => {
      const file = join(dir, `bad-${key}.conf`);
      const lines = key === "bucket" ? ["[s]", `bucket = ${value}`] : ["[s]", "bucket = bad-bucket", `${key} = ${value}`];
      writeFileSync(file, lines.join("\n") + "\n");
      const r = cli("check-config", file);
      expect(r.rc).toBe(1);
      expect(r.err).toContain(`bucketfs: config error: ${file}:${lines.length}: key "${key}": `);
      expect(r.out + r.err).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f]/);
    });
  }
});
