/**
 * Loads and validates `bucketfs.conf` into the typed `Config`.
 *
 * Is: the rules for every key (allowed keys, defaults, value checks, workdir normalization),
 * cross-section checks (unique bucket and mountpoint), the file-permission warning, and the
 * human summary printed by `bucketfs check-config`.
 * Is not: the INI syntax (`parse.ts`), nor anything that touches S3 or the filesystem beyond
 * reading and stat-ing the config file. No message built here ever contains a credential value.
 */
import { readFileSync, statSync } from "node:fs";
import { posix } from "node:path";
import { fmtBytes, redact } from "../util/log.ts";
import { ConfigError, parseIni, type IniEntry, type IniSection } from "./parse.ts";
import { DEFAULTS, type BucketConfig, type Config } from "./types.ts";

export { ConfigError } from "./parse.ts";

const KEYS = [
  "bucket",
  "aws_access_key_id",
  "aws_secret_access_key",
  "region",
  "endpoint",
  "workdir",
  "cachepath",
  "lastuploadfile",
  "mountpoint",
  "metadata_ttl",
  "transfer_concurrency",
  "part_size",
  "read_chunk_size",
  "read_concurrency",
  "read_ahead",
  "lease_time",
] as const;
type Key = (typeof KEYS)[number];

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const PATH_RULE = "must be an absolute path without '.', '..' or empty ('//') segments";

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
  return { file, buckets, warnings };
}

function parseSection(sec: IniSection, file: string, warnings: string[]): BucketConfig {
  for (const [key, e] of sec.entries) {
    if (!(KEYS as readonly string[]).includes(key)) {
      throw new ConfigError(file, `unknown key in section [${sec.name}] (allowed: ${KEYS.join(", ")})`, {
        line: e.line,
        key,
      });
    }
  }
  const fail = (key: Key, problem: string): never => {
    throw new ConfigError(file, problem, { line: sec.entries.get(key)?.line ?? sec.line, key });
  };
  /** The entry for `key`; an empty value counts as unset. */
  const opt = (key: Key): IniEntry | undefined => {
    const e = sec.entries.get(key);
    return e && e.value !== "" ? e : undefined;
  };
  const int = (key: Key, min: number, max: number, dflt: number): number => {
    const e = opt(key);
    if (!e) return dflt;
    const n = /^\d+$/.test(e.value) ? Number(e.value) : NaN;
    if (!(n >= min && n <= max)) {
      const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
      fail(key, `"${e.value}" is not valid; use a whole number ${range} (default ${dflt})`);
    }
    return n;
  };

  // bucket
  const bucketEntry = sec.entries.get("bucket");
  if (!bucketEntry) {
    throw new ConfigError(file, `section [${sec.name}]: missing required key "bucket"; add bucket = <S3 bucket name>`, {
      line: sec.line,
    });
  }
  const bucket = bucketEntry.value;
  if (bucket === "") fail("bucket", "empty value; set the S3 bucket name");
  if (!BUCKET_RE.test(bucket)) {
    fail(
      "bucket",
      `"${bucket}" is not a valid S3 bucket name; ` +
        "use 3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit",
    );
  }

  // credentials: both or neither; never echo their values
  const id = opt("aws_access_key_id");
  const secret = opt("aws_secret_access_key");
  const both = "set both, or neither to use the AWS default credential chain";
  if (id && !secret) fail("aws_access_key_id", `set without aws_secret_access_key; ${both}`);
  if (secret && !id) fail("aws_secret_access_key", `set without aws_access_key_id; ${both}`);

  const endpoint = opt("endpoint")?.value;
  if (endpoint !== undefined && !isHttpUrl(endpoint)) {
    fail("endpoint", "must be an http:// or https:// URL, e.g. https://s3.amazonaws.com; leave it unset for AWS");
  }

  const cachePathValue = opt("cachepath")?.value;
  let cachePath: string = DEFAULTS.cachePath;
  if (cachePathValue !== undefined) {
    cachePath = normAbs(cachePathValue) ?? fail("cachepath", `${PATH_RULE}, e.g. /var/cache/bucketfs`);
  }

  const lastUploadFile = opt("lastuploadfile")?.value ?? DEFAULTS.lastUploadFile;
  if (lastUploadFile.includes("/") || lastUploadFile === "." || lastUploadFile === "..") {
    fail("lastuploadfile", `must be a plain file name without '/' (not '.' or '..'), e.g. ${DEFAULTS.lastUploadFile}`);
  }

  const mountValue = opt("mountpoint")?.value;
  let mountpoint = `/${bucket}`;
  if (mountValue !== undefined) {
    mountpoint = normAbs(mountValue) ?? fail("mountpoint", `${PATH_RULE}, e.g. /mnt/${bucket}`);
    if (mountpoint === "/") fail("mountpoint", `cannot be /; use e.g. /mnt/${bucket} (default /${bucket})`);
  }

  // workdir: inside /<bucket> or the configured mountpoint, else ignored (seed: "ignored otherwise")
  let workdir: string | undefined;
  const wd = opt("workdir");
  if (wd) {
    const p = normAbs(wd.value) ?? fail("workdir", `${PATH_RULE}, e.g. /${bucket}/workdir`);
    const roots = [...new Set([mountpoint, `/${bucket}`])];
    const root = roots.find((r) => p.startsWith(r + "/"));
    const ignore = (why: string): void => {
      warnings.push(
        `${file}:${wd.line}: key "workdir": ${why}; ignored, section [${sec.name}] is read-only (use e.g. /${bucket}/workdir)`,
      );
    };
    if (p === "/") ignore("cannot be /");
    else if (roots.includes(p)) ignore(`${p} is the whole bucket, not a directory inside it`);
    else if (!root) ignore(`${p} is not inside ${roots.join(" or ")}`);
    else workdir = p.slice(root.length + 1);
  }

  return {
    section: sec.name,
    bucket,
    accessKeyId: id?.value,
    secretAccessKey: secret?.value,
    region: opt("region")?.value ?? DEFAULTS.region,
    endpoint,
    mountpoint,
    workdir,
    cachePath,
    lastUploadFile,
    metadataTtl: int("metadata_ttl", 0, Number.MAX_SAFE_INTEGER, DEFAULTS.metadataTtl),
    transferConcurrency: int("transfer_concurrency", 1, 256, DEFAULTS.transferConcurrency),
    partSize: parseSize("part_size", opt("part_size"), 5 * MiB, 5 * GiB, DEFAULTS.partSize, fail),
    readChunkSize: parseSize("read_chunk_size", opt("read_chunk_size"), MiB, 64 * MiB, DEFAULTS.readChunkSize, fail),
    readConcurrency: int("read_concurrency", 1, 64, DEFAULTS.readConcurrency),
    readAhead: parseSize("read_ahead", opt("read_ahead"), MiB, GiB, DEFAULTS.readAhead, fail),
    leaseTime: int("lease_time", 3, 86_400, DEFAULTS.leaseTime),
  };
}

/** `16777216`, `16M`, `16MiB`, `1G`, ... (K/M/G and KiB/MiB/GiB are powers of 1024), within [min, max]. */
function parseSize(
  key: Key, e: IniEntry | undefined, min: number, max: number, def: number, fail: (key: Key, problem: string) => never,
): number {
  if (!e) return def;
  const m = /^(\d+)\s*(?:([kmg])(?:ib)?)?$/i.exec(e.value);
  const unit = m?.[2]?.toLowerCase();
  const scale = unit === "k" ? 1024 : unit === "m" ? MiB : unit === "g" ? GiB : 1;
  const n = m?.[1] !== undefined ? Number(m[1]) * scale : NaN;
  if (!(n >= min && n <= max)) {
    const rule = `use bytes or a K/M/G (KiB/MiB/GiB) suffix, from ${fmtBytes(min)} to ${fmtBytes(max)} (default ${fmtBytes(def)})`;
    fail(key, `"${e.value}" is not valid; ${rule}`);
  }
  return n;
}

/** Absolute path with trailing slashes removed, or undefined if relative or has `.`/`..`/empty segments. */
function normAbs(v: string): string | undefined {
  if (!v.startsWith("/")) return undefined;
  const p = v.replace(/\/+$/, "");
  if (p === "") return "/";
  const ok = p
    .slice(1)
    .split("/")
    .every((s) => s !== "" && s !== "." && s !== "..");
  return ok ? p : undefined;
}

function isHttpUrl(v: string): boolean {
  try {
    const u = new URL(v);
    return (u.protocol === "http:" || u.protocol === "https:") && u.hostname !== "";
  } catch {
    return false;
  }
}

function readProblem(err: unknown): string {
  const code = err instanceof Error && "code" in err ? String(err.code) : "";
  if (code === "ENOENT") return "no such file; create it (start from conf.sample)";
  if (code === "EACCES") return "permission denied; run as root or make it readable by this user";
  if (code === "EISDIR") return "it is a directory; give the path of the config file";
  return code || (err instanceof Error ? err.message : String(err));
}

/** Human summary for `bucketfs check-config`. Shows at most the last 4 characters of the key id, never the secret. */
export function describeConfig(cfg: Config): string {
  const out = [`${cfg.file}: ${cfg.buckets.length} bucket(s)`];
  for (const b of cfg.buckets) {
    const id = b.accessKeyId;
    const wd = b.workdir !== undefined ? `${b.mountpoint}/${b.workdir} (s3://${b.bucket}/${b.workdir}/)` : "(none: read-only)";
    const rows: [string, string][] = [
      ["bucket", b.bucket],
      ["mountpoint", b.mountpoint],
      ["endpoint", b.endpoint !== undefined ? redact(b.endpoint) : "(AWS default)"],
      ["region", b.region],
      ["workdir", wd],
      ["cache root", `${b.cachePath} (objects in ${posix.join(b.cachePath, `.${b.bucket}`)}/)`],
      ["lastuploadfile", b.lastUploadFile],
      ["credentials", id !== undefined ? `static key ****${id.length > 4 ? id.slice(-4) : ""}` : "AWS default chain"],
      ["metadata_ttl", `${b.metadataTtl}s`],
      ["transfer_concurrency", String(b.transferConcurrency)],
      ["part_size", fmtBytes(b.partSize)],
      ["read_chunk_size", fmtBytes(b.readChunkSize)],
      ["read_concurrency", String(b.readConcurrency)],
      ["read_ahead", fmtBytes(b.readAhead)],
      ["lease_time", b.workdir !== undefined ? `${b.leaseTime}s (workdir lease, renewed every ${Math.max(1, Math.floor(b.leaseTime / 3))}s)` : "(no workdir: no lease)"],
    ];
    out.push("", `[${b.section}]`, ...rows.map(([k, v]) => `  ${k.padEnd(21)} ${v}`));
  }
  if (cfg.warnings.length > 0) out.push("", "warnings:", ...cfg.warnings.map((w) => `  ${w}`));
  return out.join("\n");
}
