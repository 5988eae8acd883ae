/**
 * The one declaration of every config key: name, field, how its value is parsed and checked,
 * its default, its README line and its `check-config` row.
 *
 * Is: the key table (`KEYS`) and what is derived from it: `BucketConfig` (the typed section),
 * `DEFAULTS`, the README table (`configTable`, kept in sync by test/unit/config-keys.test.ts)
 * and the value checks shared by every key (no control characters). Adding a key is one
 * entry here. Is not: INI syntax (`parse.ts`), rules across keys or sections (`load.ts`), or
 * file I/O. No message built here contains a credential value.
 */
import { fmtBytes, redact } from "../util/log.ts";

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const TiB = 1024 ** 4;

/** A free-space floor: absolute bytes, or a percentage of the filesystem's size. */
export type MinFree = { bytes: number } | { percent: number };

/** What a key's parser may use: the fields parsed before it (table order) and a way to fail or warn. */
export interface ParseCtx {
  file: string;
  section: string;
  /** Line of the key, or of the section header when the key is unset. */
  line: number;
  key: string;
  /** Fields parsed so far, by field name. `bucket` is always there (parsed first, required). */
  got: Readonly<Record<string, unknown>>;
  fail(problem: string): never;
  warn(message: string): void;
}

/** A default computed from other fields (e.g. mountpoint = /<bucket>). */
export class Derived<T> {
  constructor(
    readonly of: (c: ParseCtx) => T,
    /** README "default" column. */
    readonly doc: string,
  ) {}
}

export interface KeySpec<F extends string = string, T = unknown, D = unknown> {
  /** Name in the INI file (lower case). */
  key: string;
  /** Field of BucketConfig. */
  field: F;
  /** Parse and check a non-empty value (control characters are already refused). */
  parse(value: string, c: ParseCtx): T;
  /** Value when the key is unset or empty: a constant, a Derived, or `required`. */
  dflt: D;
  /** README: meaning of the key. */
  doc: string;
  /** README "default" column; by default the constant shown with `show`. */
  docDefault?: string;
  /** check-config row: [label, text]; undefined hides the key (a secret). */
  show?(value: T, b: Shown): [string, string];
  /** The value is a credential: never printed, never echoed in a message. */
  secret?: boolean;
}

/** What `show` may read besides its own value. */
export interface Shown {
  bucket: string;
  mountpoint: string;
  workdir: string | undefined;
  cachePath: string;
}

/** Marker for a key without a default (missing = an error, see load.ts). */
export const REQUIRED = Symbol("required");

function def<const F extends string, T, D extends T | Derived<T> | typeof REQUIRED>(s: KeySpec<F, T, D>): KeySpec<F, T, D> {
  return s;
}

// ---- value kinds ----------------------------------------------------------------------

/** `v` with control and invisible format characters (bidi overrides, line separators) escaped as \u{...}. */
export function printable(v: string): string {
  return v.replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, (ch) => `\\u{${ch.codePointAt(0)!.toString(16).padStart(4, "0")}}`);
}

/** A value quoted for a message: never raw (see printable), quotes and backslashes escaped. */
export function quote(v: string): string {
  return `"${printable(v.replace(/["\\]/g, (ch) => `\\${ch}`))}"`;
}

/** The first control character (C0, DEL, C1) in `v`, described without echoing `v`. */
export function controlProblem(v: string): string | undefined {
  const i = v.search(/\p{Cc}/u);
  if (i < 0) return undefined;
  const cp = v.codePointAt(i)!;
  const names: Record<number, string> = { 0: "NUL", 9: "TAB", 10: "LF", 13: "CR", 27: "ESC", 127: "DEL" };
  const name = names[cp] ? ` ${names[cp]}` : "";
  return `holds a control character (U+${cp.toString(16).toUpperCase().padStart(4, "0")}${name} at character ${i + 1}); remove it`;
}

const PATH_RULE = "must be an absolute path without '.', '..' or empty ('//') segments";

/** Absolute path with trailing slashes removed, or undefined if relative or has `.`/`..`/empty segments. */
export function normAbs(v: string): string | undefined {
  if (!v.startsWith("/")) return undefined;
  const p = v.replace(/\/+$/, "");
  if (p === "") return "/";
  const ok = p
    .slice(1)
    .split("/")
    .every((s) => s !== "" && s !== "." && s !== "..");
  return ok ? p : undefined;
}

/** Why `name` breaks S3's bucket naming rules, or undefined when it follows them. */
export function bucketNameProblem(name: string): string | undefined {
  if (name.length < 3 || name.length > 63) return "use 3 to 63 characters";
  if (!/^[a-z0-9.-]+$/.test(name)) return "use only a-z, 0-9, '.' and '-'";
  if (!/^[a-z0-9]/.test(name) || !/[a-z0-9]$/.test(name)) return "start and end with a letter or digit";
  if (name.includes("..")) return "no two adjacent periods";
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(name)) return "it may not look like an IP address";
  for (const p of ["xn--", "sthree-", "amzn-s3-demo-"]) if (name.startsWith(p)) return `the prefix ${p} is reserved`;
  for (const s of ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"]) if (name.endsWith(s)) return `the suffix ${s} is reserved`;
  return undefined;
}

function parseWhole(min: number, max: number, dflt: number) {
  return (v: string, c: ParseCtx): number => {
    const n = /^\d+$/.test(v) ? Number(v) : NaN;
    if (!(n >= min && n <= max)) {
      const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
      c.fail(`${quote(v)} is not valid; use a whole number ${range} (default ${dflt})`);
    }
    return n;
  };
}

/** `16777216`, `16M`, `16MiB`, `1G`, `2T`, ... (K/M/G/T and KiB/... are powers of 1024), within [min, max]. */
function parseSize(min: number, max: number, dflt: number | string) {
  return (v: string, c: ParseCtx): number => {
    const m = /^(\d+)\s*(?:([kmgt])(?:ib)?)?$/i.exec(v);
    const unit = m?.[2]?.toLowerCase();
    const scale = unit === "k" ? 1024 : unit === "m" ? MiB : unit === "g" ? GiB : unit === "t" ? TiB : 1;
    const n = m?.[1] !== undefined ? Number(m[1]) * scale : NaN;
    if (!(n >= min && n <= max)) {
      const d = typeof dflt === "number" ? `default ${fmtBytes(dflt)}` : dflt;
      const rule = `use bytes or a K/M/G/T (KiB/MiB/GiB/TiB) suffix, from ${fmtBytes(min)} to ${fmtBytes(max)} (${d})`;
      c.fail(`${quote(v)} is not valid; ${rule}`);
    }
    return n;
  };
}

/** `10%` (of the filesystem's size, 0 to 90) or bytes with an optional K/M/G/T suffix (0: no floor). */
function parseMinFree(v: string, c: ParseCtx): MinFree {
  const pct = /^(\d+(?:\.\d+)?)\s*%$/.exec(v);
  if (pct && Number(pct[1]) <= 90) return { percent: Number(pct[1]) };
  if (!pct && /^\d+\s*(?:[kmgt](?:ib)?)?$/i.test(v)) return { bytes: parseSize(0, 1024 * TiB, 0)(v, c) };
  return c.fail(
    `${quote(v)} is not valid; use a percentage of the filesystem from 0% to 90% (e.g. 10%), or bytes with a ` +
      "K/M/G/T suffix (e.g. 20G); default 10%",
  );
}

export function describeMinFree(m: MinFree): string {
  return "percent" in m ? `${m.percent}%` : fmtBytes(m.bytes);
}

/** A whole number key within [min, max]. */
function intKey<const F extends string>(key: string, field: F, o: { min: number; max?: number; dflt: number; doc: string; unit?: string }) {
  const max = o.max ?? Number.MAX_SAFE_INTEGER;
  return def({
    key, field, dflt: o.dflt, doc: o.doc, parse: parseWhole(o.min, max, o.dflt),
    show: (v: number) => [key, `${v}${o.unit ?? ""}`],
  });
}

/** A size as written in the config: `16M`, `1G`, or bytes. */
function sizeValue(n: number): string {
  if (n % GiB === 0) return `${n / GiB}G`;
  if (n % MiB === 0) return `${n / MiB}M`;
  return n % 1024 === 0 ? `${n / 1024}K` : String(n);
}

/** A byte size key within [min, max] (README default shown as e.g. `16MiB`). */
function sizeKey<const F extends string>(key: string, field: F, o: { min: number; max: number; dflt: number; doc: string }) {
  return def({
    key, field, dflt: o.dflt, doc: o.doc, parse: parseSize(o.min, o.max, o.dflt), docDefault: `\`${sizeValue(o.dflt)}\``,
    show: (v: number) => [key, fmtBytes(v)],
  });
}

function isHttpUrl(v: string): boolean {
  try {
    const u = new URL(v);
    return (u.protocol === "http:" || u.protocol === "https:") && u.hostname !== "";
  } catch {
    return false;
  }
}

// ---- the table ---------------------------------------------------------------------------

/** Every key, in parsing order (a key may read the fields parsed before it). */
/** A `yes`/`no` key (also true/false, on/off, 1/0). */
function parseYesNo(dflt: "yes" | "no") {
  return (v: string, c: ParseCtx): boolean => {
    const l = v.toLowerCase();
    if (["yes", "true", "on", "1"].includes(l)) return true;
    if (["no", "false", "off", "0"].includes(l)) return false;
    return c.fail(`${quote(v)} is not valid; use yes or no (default ${dflt})`);
  };
}

export const KEYS = [
  def({
    key: "bucket", field: "bucket", dflt: REQUIRED, docDefault: "(required)",
    doc: "S3 bucket name (S3's naming rules: 3-63 characters of a-z, 0-9, `.` and `-`, no `..`, not an IP address)",
    parse: (v: string, c: ParseCtx): string => {
      const why = bucketNameProblem(v);
      if (why) c.fail(`${quote(v)} is not a valid S3 bucket name: ${why}`);
      return v;
    },
    show: (v: string) => ["bucket", v],
  }),
  def({
    key: "aws_access_key_id", field: "accessKeyId", dflt: undefined, docDefault: "AWS default chain",
    doc: "static key id; give both keys or neither (neither: environment, `~/.aws` profile, instance role)",
    parse: (v: string): string | undefined => v,
    show: (v: string | undefined) => ["credentials", v !== undefined ? `static key ****${v.length > 4 ? v.slice(-4) : ""}` : "AWS default chain"],
    secret: true,
  }),
  def({
    key: "aws_secret_access_key", field: "secretAccessKey", dflt: undefined, docDefault: "AWS default chain",
    doc: "static secret; never printed or logged",
    parse: (v: string): string | undefined => v,
    secret: true,
  }),
  def({
    key: "region", field: "region", dflt: "us-east-1", doc: "S3 region",
    parse: (v: string): string => v,
    show: (v: string) => ["region", v],
  }),
  def({
    key: "endpoint", field: "endpoint", dflt: undefined, docDefault: "AWS",
    doc: "URL of an S3-compatible server (MinIO, Ceph...); path-style addressing is used for it",
    parse: (v: string, c: ParseCtx): string | undefined => {
      if (!isHttpUrl(v)) c.fail("must be an http:// or https:// URL, e.g. https://s3.amazonaws.com; leave it unset for AWS");
      return v;
    },
    show: (v: string | undefined) => ["endpoint", v !== undefined ? redact(v) : "(AWS default)"],
  }),
  def({
    key: "mountpoint", field: "mountpoint", dflt: new Derived((c) => `/${c.got.bucket as string}`, "`/<bucket>`"),
    doc: "where to mount (absolute, not `/`)",
    parse: (v: string, c: ParseCtx): string => {
      const bucket = c.got.bucket as string;
      const p = normAbs(v) ?? c.fail(`${PATH_RULE}, e.g. /mnt/${bucket}`);
      if (p === "/") c.fail(`cannot be /; use e.g. /mnt/${bucket} (default /${bucket})`);
      return p;
    },
    show: (v: string) => ["mountpoint", v],
  }),
  def({
    key: "workdir", field: "workdir", dflt: undefined, docDefault: "none",
    doc:
      "absolute path inside `/<bucket>` (or inside `mountpoint`), e.g. `/nf-data/workdir`; unset: the mount is read-only. " +
      "Outside the bucket, or `/`: warned and ignored",
    // Inside /<bucket> or the configured mountpoint, else ignored (seed: "ignored otherwise").
    parse: (v: string, c: ParseCtx): string | undefined => {
      const bucket = c.got.bucket as string;
      const mountpoint = c.got.mountpoint as string;
      const p = normAbs(v) ?? c.fail(`${PATH_RULE}, e.g. /${bucket}/workdir`);
      const roots = [...new Set([mountpoint, `/${bucket}`])];
      const root = roots.find((r) => p.startsWith(r + "/"));
      const ignore = (why: string): undefined => {
        c.warn(`${c.file}:${c.line}: key "workdir": ${why}; ignored, section [${c.section}] is read-only (use e.g. /${bucket}/workdir)`);
        return undefined;
      };
      if (p === "/") return ignore("cannot be /");
      if (roots.includes(p)) return ignore(`${p} is the whole bucket, not a directory inside it`);
      if (!root) return ignore(`${p} is not inside ${roots.join(" or ")}`);
      return p.slice(root.length + 1);
    },
    show: (v: string | undefined, b: Shown) => ["workdir", v !== undefined ? `${b.mountpoint}/${v} (s3://${b.bucket}/${v}/)` : "(none: read-only)"],
  }),
  def({
    key: "cachepath", field: "cachePath", dflt: "/tmp/bucketfs",
    doc: "holds `.<bucket>/` (object cache and local workdir), `.<bucket>.index` (sqlite), `.<bucket>.pid`; absolute, not `/`, not under /proc, /sys or /dev",
    parse: (v: string, c: ParseCtx): string => {
      const p = normAbs(v) ?? c.fail(`${PATH_RULE}, e.g. /var/cache/bucketfs`);
      if (p === "/") c.fail("cannot be /; use a directory of its own, e.g. /var/cache/bucketfs");
      const special = ["/proc", "/sys", "/dev"].find((s) => p === s || p.startsWith(s + "/"));
      if (special) c.fail(`cannot be under ${special} (not a place for files); use e.g. /var/cache/bucketfs`);
      return p;
    },
    show: (v: string, b: Shown) => ["cache root", `${v} (objects in ${v}/.${b.bucket}/)`],
  }),
  def({
    key: "lastuploadfile", field: "lastUploadFile", dflt: ".exitcode",
    doc: "marker file name, uploaded last, anywhere in the workdir tree (a plain name of at most 255 bytes)",
    parse: (v: string, c: ParseCtx): string => {
      if (v.includes("/") || v === "." || v === "..") c.fail("must be a plain file name without '/' (not '.' or '..'), e.g. .exitcode");
      const n = Buffer.byteLength(v);
      if (n > 255) c.fail(`is ${n} bytes long; a file name has at most 255 bytes`);
      return v;
    },
    show: (v: string) => ["lastuploadfile", v],
  }),
  intKey("metadata_ttl", "metadataTtl", {
    min: 0, dflt: 300, unit: "s",
    doc: "seconds a listing or attribute outside the workdir is trusted before S3 is asked again",
  }),
  intKey("transfer_concurrency", "transferConcurrency", { min: 1, max: 256, dflt: 16, doc: "parallel transfers for prefetch and upload (1 to 256)" }),
  sizeKey("part_size", "partSize", { min: 5 * MiB, max: 5 * GiB, dflt: 16 * MiB, doc: "multipart part size (5 MiB to 5 GiB; `K/M/G` suffixes)" }),
  sizeKey("read_chunk_size", "readChunkSize", {
    min: MiB, max: 64 * MiB, dflt: 16 * MiB,
    doc: "bytes per ranged GET when streaming a large object to a sequential reader (1 MiB to 64 MiB)",
  }),
  intKey("read_concurrency", "readConcurrency", { min: 1, max: 64, dflt: 8, doc: "ranged GETs in flight per object being streamed (1 to 64)" }),
  sizeKey("read_ahead", "readAhead", { min: MiB, max: GiB, dflt: 64 * MiB, doc: "largest read-ahead window of a sequential reader (1 MiB to 1 GiB); the window starts at 2 MiB once a reader has read more than 1 MiB in order, and doubles with each further MiB block it reaches; when GETs take 25 ms or more to answer (a far link) it may grow to 2-4 times this, with twice read_concurrency GETs" }),
  def({
    key: "lease_time", field: "leaseTime", dflt: 120,
    doc: 'seconds a workdir lease lasts without renewal (3 to 86400; renewed every third of it). See "Running on many nodes"',
    parse: parseWhole(3, 86_400, 120),
    show: (v: number, b: Shown) => [
      "lease_time", b.workdir !== undefined ? `${v}s (workdir lease, renewed every ${Math.max(1, Math.floor(v / 3))}s)` : "(no workdir: no lease)",
    ],
  }),
  def({
    key: "passthrough", field: "passthrough", dflt: true as boolean, docDefault: "`yes`",
    doc:
      "`yes`/`no`: let the kernel read complete cached files directly (FUSE passthrough, Linux 6.9+ with " +
      "`CONFIG_FUSE_PASSTHROUGH`, daemon with `CAP_SYS_ADMIN`); where it is not available bucketfs says so in one " +
      "log line and serves reads itself. `no` turns it off",
    parse: parseYesNo("yes"),
    show: (v: boolean) => ["passthrough", v ? "yes" : "no"],
  }),
  def({
    key: "unuploadable_holds_markers", field: "unuploadableHoldsMarkers", dflt: true as boolean, docDefault: "`yes`",
    doc:
      "`yes`/`no`: whether a workdir file that S3 cannot take (its key is over 1,024 bytes, or the server refuses the name) " +
      "holds back the markers and the lease like a failed upload. Either way it is reported once per upload and listed in " +
      "`status --json` (`workdir.unuploadable`); `no` lets the markers go without it (the way out, see \"Names\" in docs/SEMANTICS.md)",
    parse: parseYesNo("yes"),
    show: (v: boolean) => ["unuploadable_holds_markers", v ? "yes" : "no"],
  }),
  // The two cache limits are for the whole cachepath: load.ts shares them across its sections.
  def({
    key: "cache_size", field: "cacheSize", dflt: undefined, docDefault: "no byte limit",
    doc:
      "most bytes the read cache may hold (objects outside the workdir), e.g. `100G`; bytes or `K/M/G/T`, at least 1 MiB. " +
      "**For the whole `cachepath`**: the buckets sharing it share the limit",
    parse: (v: string, c: ParseCtx): number | undefined => parseSize(MiB, 1024 * TiB, "default: no byte limit")(v, c),
    show: (v: number | undefined, b: Shown) => ["cache_size", v !== undefined ? `${fmtBytes(v)} (for all of ${b.cachePath})` : "no byte limit"],
  }),
  def({
    key: "cache_min_free", field: "cacheMinFree", dflt: { percent: 10 } as MinFree, docDefault: "`10%`",
    doc:
      "free space kept on the filesystem of `cachepath` by evicting cached objects: a percentage of its size (0% to 90%) " +
      "or bytes (`20G`; `0` turns the floor off). For the whole `cachepath` too",
    parse: parseMinFree,
    show: (v: MinFree, b: Shown) => ["cache_min_free", `${describeMinFree(v)} free on the filesystem of ${b.cachePath}`],
  }),
] as const;

type Spec = (typeof KEYS)[number];
type ValueOf<S> = S extends KeySpec<string, infer T, unknown> ? T : never;

/** One bucket's section, typed: a field per key, plus the section name. */
export type BucketConfig = { section: string } & { [S in Spec as S["field"]]: ValueOf<S> };

/** The constant defaults, by field (keys with a derived default or none are absent). */
export type Defaults = { [S in Spec as S["dflt"] extends Derived<unknown> | typeof REQUIRED | undefined ? never : S["field"]]: S["dflt"] };

export const DEFAULTS = Object.fromEntries(
  KEYS.filter((k) => !(k.dflt instanceof Derived) && k.dflt !== REQUIRED && k.dflt !== undefined).map((k) => [k.field, k.dflt]),
) as Defaults;

export const KEY_NAMES: readonly string[] = KEYS.map((k) => k.key);

/** The README's configuration table (markdown), one row per key. */
export function configTable(): string {
  const rows = KEYS.map((k: KeySpec) => {
    const d = k.docDefault ?? (k.dflt instanceof Derived ? k.dflt.doc : `\`${String(k.dflt)}\``);
    return `| \`${k.key}\` | ${d} | ${k.doc} |`;
  });
  return ["| key | default | meaning |", "|---|---|---|", ...rows].join("\n");
}
