/**
 * Loads and validates `bucketfs.conf` into the typed `Config`.
 *
 * Is: applying the key table (`keys.ts`) to each section (unknown keys, control characters,
 * defaults, each key's own checks), the rules across keys and sections (credentials both or
 * neither, unique bucket and mountpoint), the file-permission warning, and the human summary
 * printed by `bucketfs check-config` (rows from the key table).
 * Is not: the INI syntax (`parse.ts`), nor anything that touches S3 or the filesystem beyond
 * reading and stat-ing the config file. No message built here ever contains a credential value.
 */
import { readFileSync, statSync } from "node:fs";
import { ConfigError, parseIni, type IniSection } from "./parse.ts";
import { controlProblem, Derived, KEY_NAMES, KEYS, printable, REQUIRED, type KeySpec, type ParseCtx } from "./keys.ts";
import type { BucketConfig, Config } from "./types.ts";

export { ConfigError } from "./parse.ts";

/** Read and validate a config file. A missing or unreadable file is a ConfigError. */
export function loadConfig(file: string): Config {
  let text: string;
  let mode: number;
  try {
    text = readFileSync(file, "utf8");
    mode = statSync(file).mode;
  } catch (err) {
    throw new ConfigError(file, `cannot read config file: ${readProblem(err)}`);
  }
  const cfg = parseConfig(text, file);
  if ((mode & 0o077) !== 0 && cfg.buckets.some((b) => b.secretAccessKey !== undefined)) {
    const m = (mode & 0o7777).toString(8).padStart(4, "0");
    cfg.warnings.push(`${file} is readable by group/others (mode ${m}) and holds secrets: chmod 600 ${file}`);
  }
  return cfg;
}

/** Validate config text; `file` is only used in messages and `Config.file`. */
export function parseConfig(text: string, file: string): Config {
  const sections = parseIni(text, file);
  if (sections.length === 0) {
    throw new ConfigError(file, "no [section] found; add one section per bucket, e.g. [nf-data] with bucket = nf-data");
  }
  const warnings: string[] = [];
  const buckets: BucketConfig[] = [];
  const byBucket = new Map<string, IniSection>();
  const byMount = new Map<string, IniSection>();
  for (const sec of sections) {
    const b = parseSection(sec, file, warnings);
    const other = byBucket.get(b.bucket);
    if (other) {
      const line = sec.entries.get("bucket")?.line ?? sec.line;
      const problem =
        `bucket "${b.bucket}" is already configured in section [${other.name}] (line ${other.line}); ` +
        "each bucket may appear only once";
      throw new ConfigError(file, problem, { line, key: "bucket" });
    }
    const sameMount = byMount.get(b.mountpoint);
    if (sameMount) {
      const line = sec.entries.get("mountpoint")?.line ?? sec.line;
      const problem =
        `mountpoint ${b.mountpoint} is also used by section [${sameMount.name}] (line ${sameMount.line}); ` +
        "give each section its own mountpoint";
      throw new ConfigError(file, problem, { line, key: "mountpoint" });
    }
    byBucket.set(b.bucket, sec);
    byMount.set(b.mountpoint, sec);
    buckets.push(b);
  }
  shareCacheLimits(file, sections, buckets);
  return { file, buckets, warnings };
}

/**
 * cache_size and cache_min_free limit a cachepath, not a section: the buckets that share a
 * cachepath share one cache on one filesystem. A value set in one of those sections applies to
 * all of them; two different values are an error naming both lines.
 */
function shareCacheLimits(file: string, sections: IniSection[], buckets: BucketConfig[]): void {
  for (const key of ["cache_size", "cache_min_free"] as const) {
    const setBy = new Map<string, { sec: IniSection; b: BucketConfig }>();
    const value = (b: BucketConfig) => (key === "cache_size" ? b.cacheSize : b.cacheMinFree);
    sections.forEach((sec, i) => {
      const b = buckets[i]!;
      if ((sec.entries.get(key)?.value ?? "") === "") return;
      const other = setBy.get(b.cachePath);
      if (!other) {
        setBy.set(b.cachePath, { sec, b });
        return;
      }
      if (JSON.stringify(value(other.b)) !== JSON.stringify(value(b))) {
        const problem =
          `${key} differs from section [${other.sec.name}] (line ${other.sec.entries.get(key)?.line}), which shares ` +
          `cachepath ${b.cachePath}; the limit is for the whole cachepath, so set it once (or the same in both)`;
        throw new ConfigError(file, problem, { line: sec.entries.get(key)?.line ?? sec.line, key });
      }
    });
    for (const b of buckets) {
      const from = setBy.get(b.cachePath);
      if (!from) continue;
      if (key === "cache_size") b.cacheSize = from.b.cacheSize;
      else b.cacheMinFree = from.b.cacheMinFree;
    }
  }
}

function parseSection(sec: IniSection, file: string, warnings: string[]): BucketConfig {
  for (const [key, e] of sec.entries) {
    if (!KEY_NAMES.includes(key)) {
      throw new ConfigError(file, `unknown key in section [${sec.name}] (allowed: ${KEY_NAMES.join(", ")})`, {
        line: e.line,
        key,
      });
    }
    const bad = controlProblem(e.value);
    if (bad) throw new ConfigError(file, `value ${bad}`, { line: e.line, key });
  }
  if (!sec.entries.has("bucket")) {
    throw new ConfigError(file, `section [${sec.name}]: missing required key "bucket"; add bucket = <S3 bucket name>`, {
      line: sec.line,
    });
  }
  const got: Record<string, unknown> = { section: sec.name };
  for (const spec of KEYS as readonly KeySpec[]) {
    const e = sec.entries.get(spec.key);
    const line = e?.line ?? sec.line;
    const c: ParseCtx = {
      file, section: sec.name, line, key: spec.key, got,
      fail: (problem) => {
        throw new ConfigError(file, problem, { line, key: spec.key });
      },
      warn: (message) => warnings.push(message),
    };
    // An empty value counts as unset.
    if (e && e.value !== "") got[spec.field] = spec.parse(e.value, c);
    else if (spec.dflt === REQUIRED) c.fail(`empty value; set the ${spec.key === "bucket" ? "S3 bucket name" : "value"}`);
    else got[spec.field] = spec.dflt instanceof Derived ? spec.dflt.of(c) : spec.dflt;
  }
  const b = got as BucketConfig;

  // credentials: both or neither; never echo their values
  const both = "set both, or neither to use the AWS default credential chain";
  const at = (key: string) => ({ line: sec.entries.get(key)?.line ?? sec.line, key });
  if (b.accessKeyId !== undefined && b.secretAccessKey === undefined) {
    throw new ConfigError(file, `set without aws_secret_access_key; ${both}`, at("aws_access_key_id"));
  }
  if (b.secretAccessKey !== undefined && b.accessKeyId === undefined) {
    throw new ConfigError(file, `set without aws_access_key_id; ${both}`, at("aws_secret_access_key"));
  }
  return b;
}

function readProblem(err: unknown): string {
  const code = err instanceof Error && "code" in err ? String(err.code) : "";
  if (code === "ENOENT") return "no such file; create it (start from conf.sample)";
  if (code === "EACCES") return "permission denied; run as root or make it readable by this user";
  if (code === "EISDIR") return "it is a directory; give the path of the config file";
  return code || (err instanceof Error ? err.message : String(err));
}

/** Human summary for `bucketfs check-config`: one row per key that has one (never a secret). */
export function describeConfig(cfg: Config): string {
  const out = [`${cfg.file}: ${cfg.buckets.length} bucket(s)`];
  for (const b of cfg.buckets) {
    const values = b as unknown as Record<string, unknown>;
    const rows = (KEYS as readonly KeySpec[]).flatMap((k) => (k.show ? [k.show(values[k.field], b)] : []));
    out.push("", `[${printable(b.section)}]`, ...rows.map(([k, v]) => `  ${k.padEnd(21)} ${printable(v)}`));
  }
  if (cfg.warnings.length > 0) out.push("", "warnings:", ...cfg.warnings.map((w) => `  ${w}`));
  return out.join("\n");
}
