/**
 * The key table (src/config/keys.ts) and what must not drift from it: the README's
 * configuration table, conf.sample, check-config rows; and the value checks every key gets
 * (no control characters, escaped when described) plus the stricter per-key rules.
 *
 * Is: pure tests over strings. Is not: a test of the INI syntax (config.test.ts).
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { ConfigError, describeConfig, parseConfig } from "../../src/config/load.ts";
import { bucketNameProblem, configTable, KEYS, quote } from "../../src/config/keys.ts";
import { withTable } from "../../scripts/config-table.ts";
import { configFails } from "../helpers/config.ts";

const F = "bucketfs.conf";
const REPO = new URL("../..", import.meta.url).pathname;
const SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCY";

const fails = (text: string): ConfigError => configFails(text, F);

/** Section [s] on line 1, bucket on line 2, `line` on line 3. */
const third = (line: string): string => `[s]\nbucket = bk1\n${line}\n`;

/** The error for `line` on line 3 names file, line 3 and `key`. */
function rejects(line: string, key: string, re: RegExp): ConfigError {
  const err = fails(third(line));
  expect([err.file, err.line, err.key]).toEqual([F, 3, key]);
  expect(err.message).toStartWith(`${F}:3: key "${key}": `);
  expect(err.message).toMatch(re);
  return err;
}

describe("the README and conf.sample follow the key table", () => {
  test("README's configuration table is the generated one (run bun scripts/config-table.ts)", () => {
    const readme = readFileSync(`${REPO}/README.md`, "utf8");
    expect(withTable(readme)).toBe(readme);
    for (const k of KEYS) expect(configTable()).toContain(`| \`${k.key}\` |`);
  });

  test("conf.sample describes every key", () => {
    const sample = readFileSync(`${REPO}/conf.sample`, "utf8");
    for (const k of KEYS) expect(sample).toMatch(new RegExp(`^#\\s+${k.key}\\s`, "m"));
  });

  test("check-config prints a row for every key except the secret", () => {
    const cfg = parseConfig(third(`aws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = ${SECRET}`), F);
    const out = describeConfig(cfg);
    for (const k of KEYS) if (k.key.startsWith("read_") || k.key === "metadata_ttl") expect(out).toContain(`  ${k.key} `);
    expect(out).toMatch(/credentials\s+static key \*\*\*\*MPLE/);
    expect(out).not.toContain(SECRET);
  });
});

describe("control characters are refused in every value, and never echoed", () => {
  const values: [string, string][] = [
    ["region", "us-east-1\u001b[31m"],
    ["region", "us\u0000east"],
    ["workdir", "/bk1/work\u0000dir"],
    ["endpoint", "http://127.0.0.1:9000/\u0007"],
    ["cachepath", "/var/cache/\u007fbucketfs"],
    ["lastuploadfile", ".exit\u0085code"],
    ["aws_secret_access_key", `${SECRET}\u001b`],
    ["mountpoint", "/mnt/a\tb"],
  ];
  for (const [key, value] of values) {
    test(`${key} = ${JSON.stringify(value)}`, () => {
      const err = rejects(`${key} = ${value}`, key, /value holds a control character \(U\+00[0-9A-F]{2}( [A-Z]+)? at character \d+\); remove it/);
      expect(err.message).not.toMatch(/\p{Cc}/u);
      expect(err.message).not.toContain(SECRET);
    });
  }

  test("the character is named: ESC in a region", () => {
    rejects("region = us-east-1\u001b[31m", "region", /U\+001B ESC at character 10/);
  });

  test("a control character in a section name is refused without echoing it", () => {
    const err = fails("[a\u001bb]\nbucket = bk1\n");
    expect(err.line).toBe(1);
    expect(err.message).toContain("section name holds a control character (U+001B ESC");
    expect(err.message).not.toMatch(/\p{Cc}/u);
  });

  test("quote() escapes what could reach a terminal raw", () => {
    expect(quote("a\u001bb\u0000c\u202ed\"")).toBe('"a\\u{001b}b\\u{0000}c\\u{202e}d\\""');
  });

  test("check-config prints invisible format characters (e.g. a bidi override) escaped", () => {
    const out = describeConfig(parseConfig("[s\u202e]\nbucket = bk1\nregion = us\u202eeast\n", F));
    expect(out).not.toContain("\u202e");
    expect(out).toContain("[s\\u{202e}]");
    expect(out).toMatch(/region\s+us\\u\{202e\}east/);
  });
});

describe("bucket names follow S3's naming rules", () => {
  test("valid names", () => {
    for (const ok of ["abc", "nf-data", "my.bucket.1", "1ab", "a".repeat(63), "192.168.1.x"]) expect(bucketNameProblem(ok)).toBeUndefined();
  });
  const bad: [string, RegExp][] = [
    ["a..b", /no two adjacent periods/],
    ["192.168.1.1", /IP address/],
    ["xn--abc", /prefix xn-- is reserved/],
    ["sthree-abc", /prefix sthree- is reserved/],
    ["abc-s3alias", /suffix -s3alias is reserved/],
    ["abc--ol-s3", /suffix --ol-s3 is reserved/],
    ["ab", /3 to 63/],
    ["Abc", /only a-z/],
    ["-abc", /start and end/],
  ];
  for (const [name, re] of bad) {
    test(`bucket = ${name}`, () => {
      const err = fails(`[s]\nregion = eu-west-1\nbucket = ${name}\n`);
      expect([err.file, err.line, err.key]).toEqual([F, 3, "bucket"]);
      expect(err.message).toStartWith(`${F}:3: key "bucket": "${name}" is not a valid S3 bucket name: `);
      expect(err.message).toMatch(re);
    });
  }
});

describe("paths and names", () => {
  for (const p of ["/", "//", "/proc", "/proc/self", "/sys/fs", "/dev", "/dev/shm/cache"]) {
    test(`cachepath = ${p} is refused`, () => {
      rejects(`cachepath = ${p}`, "cachepath", p.startsWith("//") || p === "/" ? /cannot be \// : /cannot be under \/(proc|sys|dev)/);
    });
  }

  test("cachepath next to those is fine", () => {
    const b = parseConfig(third("cachepath = /procs/cache"), F).buckets[0];
    expect(b?.cachePath).toBe("/procs/cache");
    expect(parseConfig(third("cachepath = /var/cache/bucketfs"), F).buckets[0]?.cachePath).toBe("/var/cache/bucketfs");
  });

  test("lastuploadfile of 300 characters is refused; 255 bytes is fine", () => {
    rejects(`lastuploadfile = ${"x".repeat(300)}`, "lastuploadfile", /is 300 bytes long; a file name has at most 255 bytes/);
    expect(parseConfig(third(`lastuploadfile = ${"x".repeat(255)}`), F).buckets[0]?.lastUploadFile).toHaveLength(255);
    // 128 two-byte characters: 256 bytes.
    rejects(`lastuploadfile = ${"é".repeat(128)}`, "lastuploadfile", /256 bytes/);
  });
});
