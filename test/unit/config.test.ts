/**
 * Unit tests for the config parser and loader (`src/config/parse.ts`, `src/config/load.ts`).
 *
 * Is: every syntax and validation rule, message shapes, secret hygiene, the permission warning
 * (with real temp files). Is not: a test of anything that uses the Config.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, describeConfig, loadConfig, parseConfig } from "../../src/config/load.ts";
import { parseIni } from "../../src/config/parse.ts";
import { DEFAULTS, type Config } from "../../src/config/types.ts";
import { configFails } from "../helpers/config.ts";

const F = "bucketfs.conf";
const KEY_ID = "AKIAIOSFODNN7EXAMPLE";
const SECRET = "wJalrXUt;nFEMI#K7MDENG=bPxRfiCY";
const MiB = 1024 * 1024;

/** No piece of the secret or the key id, in any case (keys are lower-cased by the parser). */
function expectNoSecret(text: string): void {
  const t = text.toLowerCase();
  for (const piece of ["wjalrxut", "nfemi", "k7mdeng", "bpxrficy", "akiaiosfodnn"]) expect(t).not.toContain(piece);
}

const SEED = `[nf-data]
bucket = nf-data
aws_access_key_id = ${KEY_ID}
aws_secret_access_key = ${SECRET}
region = us-east-1
endpoint = https://s3.amazonaws.com
workdir = /nf-data/workdir
#lastuploadfile = .exitcode

[ngi-igenomes]
bucket = ngi-igenomes
aws_access_key_id = ${KEY_ID}
aws_secret_access_key = ${SECRET}
region = us-east-1
endpoint = https://s3.amazonaws.com
#workdir = /ngi-igenomes/workdir
`;

/** One section `[s]` (line 1) with `bucket = bk1` (line 2) and the given extra lines from line 3. */
const one = (...lines: string[]): string => ["[s]", "bucket = bk1", ...lines].join("\n");

const fails = (text: string): ConfigError => configFails(text, F);

function first(cfg: Config) {
  const b = cfg.buckets[0];
  if (!b) throw new Error("no bucket");
  return b;
}

const parse1 = (...lines: string[]) => first(parseConfig(one(...lines), F));

describe("parseIni", () => {
  test("sections, lower-cased keys, trimmed values and line numbers", () => {
    const s = parseIni("  [ my.bucket ]  \n  Region =  eu-west-1  \n\nBUCKET=a.b\n", F);
    expect(s).toHaveLength(1);
    expect(s[0]?.name).toBe("my.bucket");
    expect(s[0]?.line).toBe(1);
    expect(s[0]?.entries.get("region")).toEqual({ value: "eu-west-1", line: 2 });
    expect(s[0]?.entries.get("bucket")).toEqual({ value: "a.b", line: 4 });
  });

  test("full-line # and ; comments (also indented) and blank lines are ignored; CRLF works", () => {
    const s = parseIni("# top\r\n[a]\r\n  ; note\r\n\t#lastuploadfile = .exitcode\r\n\r\nx = 1\r\n", F);
    expect([...(s[0]?.entries.keys() ?? [])]).toEqual(["x"]);
    expect(s[0]?.entries.get("x")).toEqual({ value: "1", line: 6 });
  });

  test("splits at the first '=' and keeps ';' and '#' inside values (no inline comments)", () => {
    const e = parseIni("[a]\nk = b=c ; not a comment # either\n", F)[0]?.entries;
    expect(e?.get("k")?.value).toBe("b=c ; not a comment # either");
  });

  test("matching quotes are removed, anything else is literal", () => {
    const e = parseIni(`[a]\nd = "x ; y"\ns = 'p#q'\nm = "abc'\nh = "abc\ne = ""\nq = "\n`, F)[0]?.entries;
    expect(e?.get("d")?.value).toBe("x ; y");
    expect(e?.get("s")?.value).toBe("p#q");
    expect(e?.get("m")?.value).toBe(`"abc'`);
    expect(e?.get("h")?.value).toBe(`"abc`);
    expect(e?.get("e")?.value).toBe("");
    expect(e?.get("q")?.value).toBe(`"`);
  });

  test("syntax errors name file and line", () => {
    const cases: [string, number, string | undefined, RegExp][] = [
      ["[a]\nbucket = x\njust words\n", 3, undefined, /not a comment, \[section\] or key = value/],
      ["region = x\n[a]\n", 1, "region", /outside any section/],
      ["[a]\n = x\n", 2, undefined, /empty key/],
      ["[a]\nk = 1\n\nK = 2\n", 4, "k", /duplicate key in section \[a\] \(first on line 2\)/],
      ["[a]\n[b]\n[a]\n", 3, undefined, /duplicate section \[a\] \(first on line 1\)/],
      ["[a]\n[]\n", 2, undefined, /empty section name/],
      ["[a]\n[b\n", 2, undefined, /section header/],
      ["[a]\nmy key = 1\n", 2, undefined, /invalid key name/],
    ];
    for (const [text, line, key, re] of cases) {
      let err: unknown;
      try {
        parseIni(text, F);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      const ce = err as ConfigError;
      expect(ce.file).toBe(F);
      expect(ce.line).toBe(line);
      expect(ce.key).toBe(key);
      expect(ce.message.startsWith(`${F}:${line}: ${key !== undefined ? `key "${key}": ` : ""}`)).toBe(true);
      expect(ce.message).toMatch(re);
    }
  });

  test("malformed lines are never echoed", () => {
    for (const bad of [SECRET, `aws_secret_access_key: ${SECRET}`, `${"x".repeat(40)} = 1`]) {
      const err = fails(`[a]\nbucket = abc\n${bad}\n`);
      expect(err.line).toBe(3);
      expectNoSecret(err.message);
      expect(err.message).not.toContain("xxxxxxxx");
    }
  });
});

describe("parseConfig", () => {
  test("the seed example", () => {
    const cfg = parseConfig(SEED, F);
    expect(cfg.file).toBe(F);
    expect(cfg.warnings).toEqual([]);
    expect(cfg.buckets).toEqual([
      {
        section: "nf-data",
        bucket: "nf-data",
        accessKeyId: KEY_ID,
        secretAccessKey: SECRET,
        region: "us-east-1",
        endpoint: "https://s3.amazonaws.com",
        mountpoint: "/nf-data",
        workdir: "workdir",
        cachePath: "/tmp/bucketfs",
        lastUploadFile: ".exitcode",
        metadataTtl: 300,
        transferConcurrency: 16,
        partSize: 16 * MiB,
        readChunkSize: 16 * MiB,
        readConcurrency: 8,
        readAhead: 64 * MiB,
        leaseTime: 120,
        passthrough: true,
        unuploadableHoldsMarkers: true,
        cacheSize: undefined,
        cacheMinFree: { percent: 10 },
      },
      expect.objectContaining({ section: "ngi-igenomes", bucket: "ngi-igenomes", workdir: undefined }),
    ]);
  });

  test("defaults for a minimal section", () => {
    expect(parse1()).toEqual({
      section: "s",
      bucket: "bk1",
      accessKeyId: undefined,
      secretAccessKey: undefined,
      region: DEFAULTS.region,
      endpoint: undefined,
      mountpoint: "/bk1",
      workdir: undefined,
      cachePath: DEFAULTS.cachePath,
      lastUploadFile: DEFAULTS.lastUploadFile,
      metadataTtl: DEFAULTS.metadataTtl,
      transferConcurrency: DEFAULTS.transferConcurrency,
      partSize: DEFAULTS.partSize,
      readChunkSize: DEFAULTS.readChunkSize,
      readConcurrency: DEFAULTS.readConcurrency,
      readAhead: DEFAULTS.readAhead,
      leaseTime: DEFAULTS.leaseTime,
      passthrough: true,
      unuploadableHoldsMarkers: true,
      cacheSize: undefined,
      cacheMinFree: DEFAULTS.cacheMinFree,
    });
    expect(DEFAULTS).toMatchObject({ region: "us-east-1", cachePath: "/tmp/bucketfs", lastUploadFile: ".exitcode" });
    expect(DEFAULTS).toMatchObject({ readChunkSize: 16 * 1024 * 1024, readConcurrency: 8, readAhead: 64 * 1024 * 1024 });
  });

  test("passthrough takes yes/no and rejects anything else with the key's line", () => {
    expect(parse1("passthrough = no").passthrough).toBe(false);
    expect(parse1("passthrough = YES").passthrough).toBe(true);
    expect(parse1("passthrough = off").passthrough).toBe(false);
    expect(() => parse1("passthrough = maybe")).toThrow(/passthrough.*"maybe" is not valid; use yes or no/s);
  });

  test("empty values mean unset", () => {
    const b = parse1("workdir =", "region =", "endpoint = ", "cachepath=", "lastuploadfile =", "mountpoint =", "part_size =",
      "metadata_ttl =", "transfer_concurrency =", "aws_access_key_id =", "aws_secret_access_key = ''");
    expect(b).toMatchObject({ workdir: undefined, region: "us-east-1", endpoint: undefined, mountpoint: "/bk1", partSize: 16 * MiB });
    expect(b.accessKeyId).toBeUndefined();
    expect(b.secretAccessKey).toBeUndefined();
  });

  test("secrets keep ';', '#' and '=', quoted or not", () => {
    const plain = parse1(`aws_access_key_id = ${KEY_ID}`, `aws_secret_access_key = ${SECRET}`);
    expect(plain.secretAccessKey).toBe(SECRET);
    const quoted = parse1(`aws_access_key_id = "${KEY_ID}"`, `aws_secret_access_key = ' ${SECRET} '`);
    expect(quoted.accessKeyId).toBe(KEY_ID);
    expect(quoted.secretAccessKey).toBe(` ${SECRET} `);
  });

  test("unknown key: file, line, key, and the allowed list", () => {
    const err = fails(one("region = x", "workdr = /bk1/w"));
    expect(err.file).toBe(F);
    expect(err.line).toBe(4);
    expect(err.key).toBe("workdr");
    expect(err.message).toStartWith(`${F}:4: key "workdr": unknown key in section [s] (allowed: bucket, aws_access_key_id, `);
    expect(err.message).toContain("part_size");
  });

  test("missing bucket names the section and its header line", () => {
    const err = fails(`${one()}\n\n[second]\nregion = eu-west-1\n`);
    expect(err.line).toBe(4);
    expect(err.message).toBe(`${F}:4: section [second]: missing required key "bucket"; add bucket = <S3 bucket name>`);
  });

  test("bucket name rules", () => {
    for (const ok of ["abc", "nf-data", "ngi-igenomes", "my.bucket.1", "a".repeat(63), "1ab"]) {
      expect(first(parseConfig(`[x]\nbucket = ${ok}\n`, F)).bucket).toBe(ok);
    }
    for (const bad of ["ab", "a".repeat(64), "My-Bucket", "-abc", "abc-", ".abc", "abc.", "a_b", "a b c"]) {
      const err = fails(`[x]\nbucket = ${bad}\n`);
      expect(err.line).toBe(2);
      expect(err.key).toBe("bucket");
      expect(err.message).toContain("not a valid S3 bucket name");
    }
    expect(fails("[x]\nbucket =\n").message).toBe(`${F}:2: key "bucket": empty value; set the S3 bucket name`);
  });

  test("credentials: both, neither, or an error naming the other key", () => {
    expect(parse1(`aws_access_key_id = ${KEY_ID}`, `aws_secret_access_key = ${SECRET}`).accessKeyId).toBe(KEY_ID);
    const neither = parse1();
    expect([neither.accessKeyId, neither.secretAccessKey]).toEqual([undefined, undefined]);

    const onlyId = fails(one("region = x", `aws_access_key_id = ${KEY_ID}`));
    expect([onlyId.line, onlyId.key]).toEqual([4, "aws_access_key_id"]);
    expect(onlyId.message).toContain("without aws_secret_access_key");
    expect(onlyId.message).not.toContain(KEY_ID);

    const onlySecret = fails(one(`aws_secret_access_key = ${SECRET}`, "aws_access_key_id ="));
    expect([onlySecret.line, onlySecret.key]).toEqual([3, "aws_secret_access_key"]);
    expect(onlySecret.message).toContain("without aws_access_key_id");
    expect(onlySecret.message).not.toContain(SECRET);
  });

  test("endpoint must be an http(s) URL", () => {
    expect(parse1("endpoint = http://127.0.0.1:9000").endpoint).toBe("http://127.0.0.1:9000");
    expect(parse1("endpoint = https://s3.example.org/").endpoint).toBe("https://s3.example.org/");
    for (const bad of ["s3.amazonaws.com", "ftp://s3.example.org", "https://", "file:///tmp/x"]) {
      const err = fails(one(`endpoint = ${bad}`));
      expect([err.line, err.key]).toEqual([3, "endpoint"]);
      expect(err.message).toContain("http:// or https:// URL");
    }
  });

  test("region is taken as given", () => {
    expect(parse1("region = eu-central-1").region).toBe("eu-central-1");
  });

  test("cachepath must be absolute; trailing slashes are stripped", () => {
    expect(parse1("cachepath = /var/cache/bucketfs/").cachePath).toBe("/var/cache/bucketfs");
    for (const bad of ["var/cache", "./cache", "/var/../cache", "/var//cache"]) {
      const err = fails(one(`cachepath = ${bad}`));
      expect([err.line, err.key]).toEqual([3, "cachepath"]);
      expect(err.message).toContain("absolute path");
    }
  });

  test("lastuploadfile is a plain file name", () => {
    expect(parse1("lastuploadfile = _DONE").lastUploadFile).toBe("_DONE");
    for (const bad of ["a/b", "/x", ".", ".."]) {
      const err = fails(one(`lastuploadfile = ${bad}`));
      expect([err.line, err.key]).toEqual([3, "lastuploadfile"]);
      expect(err.message).toContain("plain file name");
    }
  });

  test("mountpoint: default /<bucket>, absolute, normalized, not /", () => {
    expect(parse1().mountpoint).toBe("/bk1");
    expect(parse1("mountpoint = /mnt/data//").mountpoint).toBe("/mnt/data");
    for (const [bad, re] of [
      ["/", /cannot be \//],
      ["//", /cannot be \//],
      ["mnt/data", /absolute path/],
      ["/mnt/../data", /absolute path/],
      ["/mnt/./data", /absolute path/],
      ["/mnt//data", /absolute path/],
    ] as const) {
      const err = fails(one(`mountpoint = ${bad}`));
      expect([err.line, err.key]).toEqual([3, "mountpoint"]);
      expect(err.message).toMatch(re);
    }
  });

  test("metadata_ttl and transfer_concurrency are bounded integers", () => {
    expect(parse1("metadata_ttl = 0").metadataTtl).toBe(0);
    expect(parse1("metadata_ttl = 86400").metadataTtl).toBe(86400);
    expect(parse1("transfer_concurrency = 1").transferConcurrency).toBe(1);
    expect(parse1("transfer_concurrency = 256").transferConcurrency).toBe(256);
    for (const [line, key, re] of [
      ["metadata_ttl = -1", "metadata_ttl", />= 0/],
      ["metadata_ttl = 1.5", "metadata_ttl", />= 0/],
      ["metadata_ttl = 5m", "metadata_ttl", />= 0/],
      ["transfer_concurrency = 0", "transfer_concurrency", /from 1 to 256/],
      ["transfer_concurrency = 257", "transfer_concurrency", /from 1 to 256/],
      ["transfer_concurrency = many", "transfer_concurrency", /from 1 to 256/],
    ] as const) {
      const err = fails(one(line));
      expect([err.line, err.key]).toEqual([3, key]);
      expect(err.message).toMatch(re);
    }
  });

  test("part_size: bytes or K/M/G, KiB/MiB/GiB suffixes (powers of 1024), 5 MiB..5 GiB", () => {
    const cases: [string, number][] = [
      ["5242880", 5 * MiB],
      ["5120K", 5 * MiB],
      ["5120KiB", 5 * MiB],
      ["8M", 8 * MiB],
      ["64 MiB", 64 * MiB],
      ["32mib", 32 * MiB],
      ["1G", 1024 * MiB],
      ["5GiB", 5 * 1024 * MiB],
    ];
    for (const [v, n] of cases) expect(parse1(`part_size = ${v}`).partSize).toBe(n);
    for (const bad of ["5242879", "4M", "6G", "5121M", "16MB", "1.5G", "16 M B", "big", "-8M"]) {
      const err = fails(one(`part_size = ${bad}`));
      expect([err.line, err.key]).toEqual([3, "part_size"]);
      expect(err.message).toContain("from 5.0 MiB to 5.0 GiB");
    }
  });

  describe("workdir", () => {
    const wd = (value: string, ...extra: string[]) => parseConfig(one(...extra, `workdir = ${value}`), F);

    test("becomes a path relative to the bucket root, trailing slashes stripped", () => {
      expect(first(wd("/bk1/workdir")).workdir).toBe("workdir");
      expect(first(wd("/bk1/runs/a/")).workdir).toBe("runs/a");
      expect(first(wd("/bk1/runs/a//")).workdir).toBe("runs/a");
      expect(wd("/bk1/workdir").warnings).toEqual([]);
    });

    test("outside /<bucket>, equal to it, or / is ignored with a warning naming file, line and key", () => {
      for (const [value, why] of [
        ["/other/workdir", "/other/workdir is not inside /bk1"],
        ["/bk1x/workdir", "/bk1x/workdir is not inside /bk1"],
        ["/bk1", "/bk1 is the whole bucket"],
        ["/bk1/", "/bk1 is the whole bucket"],
        ["/", "cannot be /"],
      ] as const) {
        const cfg = wd(value);
        expect(first(cfg).workdir).toBeUndefined();
        expect(cfg.warnings).toHaveLength(1);
        expect(cfg.warnings[0]).toStartWith(`${F}:3: key "workdir": ${why}`);
        expect(cfg.warnings[0]).toContain("ignored, section [s] is read-only");
      }
    });

    test("relative or with '.', '..' or empty segments is an error", () => {
      for (const bad of ["workdir", "bk1/workdir", "/bk1/./w", "/bk1/../w", "/bk1//w", "/bk1/w/.."]) {
        const err = fails(one(`workdir = ${bad}`));
        expect([err.line, err.key]).toEqual([3, "workdir"]);
        expect(err.message).toContain("absolute path without '.', '..' or empty ('//') segments");
      }
    });

    test("with a mountpoint: inside the mountpoint or inside /<bucket>", () => {
      expect(first(wd("/mnt/data/w/x", "mountpoint = /mnt/data")).workdir).toBe("w/x");
      expect(first(wd("/bk1/w", "mountpoint = /mnt/data")).workdir).toBe("w");
      const eq = wd("/mnt/data", "mountpoint = /mnt/data");
      expect(first(eq).workdir).toBeUndefined();
      expect(eq.warnings[0]).toContain("/mnt/data is the whole bucket");
      const out = wd("/mnt/other/w", "mountpoint = /mnt/data");
      expect(first(out).workdir).toBeUndefined();
      expect(out.warnings[0]).toContain("is not inside /mnt/data or /bk1");
    });
  });

  test("duplicate bucket across sections", () => {
    const err = fails(`${one()}\n[t]\nregion = x\nbucket = bk1\n`);
    expect([err.line, err.key]).toEqual([5, "bucket"]);
    expect(err.message).toBe(
      `${F}:5: key "bucket": bucket "bk1" is already configured in section [s] (line 1); each bucket may appear only once`,
    );
  });

  test("duplicate mountpoint across sections (explicit, or explicit vs default)", () => {
    const a = fails(`${one("mountpoint = /mnt/x")}\n[t]\nbucket = bk2\nmountpoint = /mnt/x/\n`);
    expect([a.line, a.key]).toEqual([6, "mountpoint"]);
    expect(a.message).toContain("mountpoint /mnt/x is also used by section [s] (line 1)");
    const b = fails(`${one()}\n[t]\nbucket = bk2\nmountpoint = /bk1\n`);
    expect([b.line, b.key]).toEqual([5, "mountpoint"]);
    const c = fails(`${one("mountpoint = /bk2")}\n[t]\nbucket = bk2\n`);
    expect([c.line, c.key]).toEqual([4, "mountpoint"]);
  });

  test("no sections at all", () => {
    for (const text of ["", "\n\n", "# only\n; comments\n"]) {
      const err = fails(text);
      expect(err.line).toBeUndefined();
      expect(err.message).toStartWith(`${F}: no [section] found`);
    }
  });

  test("secrets never appear in any error or warning", () => {
    const creds = [`aws_access_key_id = ${KEY_ID}`, `aws_secret_access_key = ${SECRET}`];
    const bad = [
      one(`aws_secret_access_key = ${SECRET}`),
      one(`aws_access_key_id = ${KEY_ID}`),
      one(...creds, `aws_secret_access_key = ${SECRET}`),
      one(...creds, `aws_access_key_id = ${KEY_ID}`),
      one(...creds, "workdr = /bk1/w"),
      one(...creds, "part_size = 1"),
      one(...creds, `${SECRET}`),
      one(...creds, `aws_secret_access_key ${SECRET}`),
      `aws_secret_access_key = ${SECRET}\n[s]\nbucket = bk1\n`,
      `${one(...creds)}\n[t]\nbucket = bk1\n${creds.join("\n")}\n`,
    ];
    for (const text of bad) {
      expectNoSecret(fails(text).message);
    }
    const warned = parseConfig(one(...creds, "workdir = /elsewhere"), F);
    expect(warned.warnings).toHaveLength(1);
    for (const w of warned.warnings) expectNoSecret(w);
  });
});

describe("loadConfig", () => {
  const dir = mkdtempSync(join(tmpdir(), "bucketfs-config-test-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, text: string, mode: number): string => {
    const p = join(dir, name);
    writeFileSync(p, text);
    chmodSync(p, mode);
    return p;
  };

  test("mode 0644 with secrets warns; the warning holds no secret", () => {
    const p = write("loose.conf", SEED, 0o644);
    const cfg = loadConfig(p);
    expect(cfg.file).toBe(p);
    expect(cfg.buckets).toHaveLength(2);
    expect(cfg.warnings).toEqual([`${p} is readable by group/others (mode 0644) and holds secrets: chmod 600 ${p}`]);
    expectNoSecret(cfg.warnings.join("\n"));
  });

  test("mode 0640 warns too, mode 0600 does not", () => {
    expect(loadConfig(write("group.conf", SEED, 0o640)).warnings[0]).toContain("(mode 0640)");
    expect(loadConfig(write("tight.conf", SEED, 0o600)).warnings).toEqual([]);
  });

  test("a readable file without secrets does not warn", () => {
    expect(loadConfig(write("public.conf", one("workdir = /bk1/w"), 0o644)).warnings).toEqual([]);
  });

  test("missing file or a directory is a ConfigError naming the path", () => {
    const missing = join(dir, "nope.conf");
    expect(() => loadConfig(missing)).toThrow(ConfigError);
    expect(() => loadConfig(missing)).toThrow(`${missing}: cannot read config file: no such file`);
    expect(() => loadConfig(dir)).toThrow(`${dir}: cannot read config file:`);
  });

  test("conf.sample is a valid config matching the seed layout", () => {
    const cfg = loadConfig(join(import.meta.dir, "../../conf.sample"));
    expect(cfg.buckets.map((b) => [b.section, b.bucket, b.workdir, b.accessKeyId])).toEqual([
      ["nf-data", "nf-data", "workdir", "AKIA..."],
      ["ngi-igenomes", "ngi-igenomes", undefined, "AKIA..."],
    ]);
  });

  test("errors carry the path as given", () => {
    const p = write("bad.conf", one("workdr = x"), 0o600);
    expect(() => loadConfig(p)).toThrow(`${p}:3: key "workdr": unknown key`);
  });
});

describe("describeConfig", () => {
  test("summarizes each bucket without secrets", () => {
    const cfg = parseConfig(`${SEED}\n[plain]\nbucket = plain-bucket\nendpoint = https://user:pw@minio.local:9000\n`, F);
    const out = describeConfig(cfg);
    expect(out).toContain(`${F}: 3 bucket(s)`);
    expect(out).toContain("[nf-data]");
    expect(out).toMatch(/mountpoint\s+\/nf-data\n/);
    expect(out).toMatch(/workdir\s+\/nf-data\/workdir \(s3:\/\/nf-data\/workdir\/\)/);
    expect(out).toMatch(/endpoint\s+https:\/\/s3\.amazonaws\.com/);
    expect(out).toMatch(/region\s+us-east-1/);
    expect(out).toMatch(/cache root\s+\/tmp\/bucketfs \(objects in \/tmp\/bucketfs\/\.nf-data\/\)/);
    expect(out).toMatch(/lastuploadfile\s+\.exitcode/);
    expect(out).toMatch(/workdir\s+\(none: read-only\)/);
    expect(out).toContain("static key ****MPLE");
    expect(out).toMatch(/credentials\s+AWS default chain/);
    expect(out).toMatch(/part_size\s+16\.0 MiB/);
    expectNoSecret(out);
    expect(out).not.toContain("user:pw");
  });

  test("lists warnings", () => {
    const out = describeConfig(parseConfig(one("workdir = /"), F));
    expect(out).toContain("warnings:");
    expect(out).toContain(`${F}:3: key "workdir": cannot be /`);
  });
});

describe("read tuning keys", () => {
  const base = "[s]\nbucket = bk1\n";
  test("sizes with suffixes and concurrency are parsed", () => {
    const c = parseConfig(`${base}read_chunk_size = 4MiB\nread_concurrency = 16\nread_ahead = 256M\n`, "t.conf").buckets[0]!;
    expect([c.readChunkSize, c.readConcurrency, c.readAhead]).toEqual([4 * 1024 * 1024, 16, 256 * 1024 * 1024]);
  });
  test("out-of-range values name the key and the allowed range", () => {
    expect(() => parseConfig(`${base}read_chunk_size = 512K\n`, "t.conf")).toThrow(/read_chunk_size.*1\.0 MiB to 64\.0 MiB/);
    expect(() => parseConfig(`${base}read_concurrency = 0\n`, "t.conf")).toThrow(/read_concurrency/);
    expect(() => parseConfig(`${base}read_ahead = 2G\n`, "t.conf")).toThrow(/read_ahead/);
  });
});

describe("cache limit keys", () => {
  const parse1 = (...lines: string[]) => first(parseConfig(one(...lines), F));
  const GiB = 1024 * MiB;

  test("an operator who sets neither key gets no byte limit and a 10 % free-space floor", () => {
    expect(parse1()).toMatchObject({ cacheSize: undefined, cacheMinFree: { percent: 10 } });
  });

  test("cache_size takes bytes or K/M/G/T", () => {
    expect(parse1("cache_size = 100M").cacheSize).toBe(100 * MiB);
    expect(parse1("cache_size = 2T").cacheSize).toBe(2 * 1024 * GiB);
    expect(parse1("cache_size = 3GiB").cacheSize).toBe(3 * GiB);
    expect(parse1(`cache_size = ${5 * MiB}`).cacheSize).toBe(5 * MiB);
    for (const bad of ["-1", "10X", "1.5G", "100", "lots"]) {
      const e = fails(one(`cache_size = ${bad}`));
      expect(e.key).toBe("cache_size");
      expect(e.message).toContain("K/M/G/T");
    }
  });

  test("cache_min_free takes a percentage or bytes", () => {
    expect(parse1("cache_min_free = 25%").cacheMinFree).toEqual({ percent: 25 });
    expect(parse1("cache_min_free = 2.5 %").cacheMinFree).toEqual({ percent: 2.5 });
    expect(parse1("cache_min_free = 20G").cacheMinFree).toEqual({ bytes: 20 * GiB });
    expect(parse1("cache_min_free = 0").cacheMinFree).toEqual({ bytes: 0 });
    for (const bad of ["95%", "-5%", "ten", "5 percent", "%"]) {
      const e = fails(one(`cache_min_free = ${bad}`));
      expect(e.key).toBe("cache_min_free");
      expect(e.message).toContain("percentage");
    }
  });

  test("the limits belong to the cachepath: set once, they apply to every section sharing it", () => {
    const cfg = parseConfig(
      ["[a]", "bucket = bk1", "cache_size = 1G", "", "[b]", "bucket = bk2", "cache_min_free = 5%", "",
        "[c]", "bucket = bk3", "cachepath = /var/cache/other"].join("\n"),
      F,
    );
    const [a, b, c] = cfg.buckets;
    expect(a).toMatchObject({ cacheSize: GiB, cacheMinFree: { percent: 5 } });
    expect(b).toMatchObject({ cacheSize: GiB, cacheMinFree: { percent: 5 } });
    expect(c).toMatchObject({ cacheSize: undefined, cacheMinFree: { percent: 10 } });
  });

  test("two sections sharing a cachepath with different limits is an error naming both", () => {
    const e = fails(["[a]", "bucket = bk1", "cache_size = 1G", "", "[b]", "bucket = bk2", "cache_size = 2G"].join("\n"));
    expect(e.key).toBe("cache_size");
    expect(e.line).toBe(7);
    expect(e.message).toContain("[a] (line 3)");
    expect(e.message).toContain("/tmp/bucketfs");
    const same = parseConfig(["[a]", "bucket = bk1", "cache_size = 1G", "", "[b]", "bucket = bk2", "cache_size = 1024M"].join("\n"), F);
    expect(same.buckets.map((b) => b.cacheSize)).toEqual([GiB, GiB]);
  });

  test("check-config shows both limits and that they cover the cachepath", () => {
    const text = describeConfig(parseConfig(one("cache_size = 100M"), F));
    expect(text).toMatch(/cache_size\s+100\.0 MiB \(for all of \/tmp\/bucketfs\)/);
    expect(text).toMatch(/cache_min_free\s+10% free on the filesystem of \/tmp\/bucketfs/);
  });
});
