/**
 * Commit records: what one upload run (a stop or a sync) left the workdir prefix as, written to
 * `<workdir>/.bucketfs/commits/<seq>.json` after every other file and before the markers.
 *
 * Is: the record's shape, its key scheme (a zero-padded sequence number, so the latest record is
 * the greatest key), building the next record from the workdir and the previous record, parsing
 * a record read from S3 (untrusted input: every path is checked like any key), the prefetch plan
 * a record implies (which remote keys were deleted locally after bucketfs uploaded them, which
 * symlinks and empty directories to recreate), and the comparison `bucketfs verify` prints
 * (missing, size, ETag, and each file's full-object CRC64NVME where S3 has one).
 * Is not: I/O. Callers list, get and put; this module only decides.
 *
 * Deletions: bucketfs never deletes in S3. A file that bucketfs uploaded and the workdir later
 * deleted stays in S3, so the record carries it in `deleted` with the ETag bucketfs uploaded.
 * Prefetch skips such a key only while S3 still holds exactly that ETag: an object another
 * writer added or changed is fetched as before. `deleted` entries are carried from record to
 * record until the path exists again.
 */
import { keyProblem } from "../../cache/keys.ts";
import type { ObjectInfo } from "../../store/types.ts";
import { RESERVED_DIR } from "./lease.ts";
import type { MappedName } from "./names.ts";

export interface RecordFile {
  /** Path relative to the workdir, "/"-separated. */
  path: string;
  size: number;
  mtimeMs: number;
  /** st_mode permission bits. */
  mode: number;
  /** ETag of the object in S3; "" for markers, which are uploaded after the record. */
  etag: string;
  /** A marker file (`lastuploadfile`): uploaded after this record, checked by size only. */
  marker?: true;
  /** The full-object CRC64NVME (base64) S3 accepted for the upload, when bucketfs uploaded it. */
  crc64nvme?: string;
}

export interface CommitRecord {
  v: 1;
  seq: number;
  runId: string;
  node: string;
  /** What ran the upload: a stop, a sync (checkpoint), or the start's recovery of changes left by a crash. */
  kind: "stop" | "sync" | "recovery";
  createdMs: number;
  /** The workdir prefix the paths are relative to. */
  prefix: string;
  files: RecordFile[];
  symlinks: { path: string; target: string }[];
  /** Directories with nothing in them. */
  dirs: string[];
  /** Uploaded by bucketfs in an earlier run, deleted from the workdir since. */
  deleted: { path: string; etag: string }[];
  /**
   * Keys S3 listed under the prefix but answered 404 for at prefetch (a server that lists a key
   * under another name than it serves): never in the workdir, never counted as deleted.
   * Absent when there are none.
   */
  unreadable?: { key: string; etag: string }[];
  /**
   * Paths whose bytes on disk are not valid UTF-8, stored under their mapped key (names.ts):
   * the original bytes (base64), which prefetch restores. Absent when there are none.
   */
  names?: MappedName[];
}

export const COMMITS_DIR = `${RESERVED_DIR}/commits/`;
const SEQ_DIGITS = 12;

export function commitsPrefix(prefix: string): string {
  return `${prefix}${COMMITS_DIR}`;
}

export function recordKey(prefix: string, seq: number): string {
  return `${commitsPrefix(prefix)}${String(seq).padStart(SEQ_DIGITS, "0")}.json`;
}

/** The sequence number of a record key, or null when the key is not one. */
export function seqOfKey(prefix: string, key: string): number | null {
  const base = commitsPrefix(prefix);
  if (!key.startsWith(base)) return null;
  const m = /^(\d{12})\.json$/.exec(key.slice(base.length));
  return m ? Number(m[1]) : null;
}

/** True for keys under the workdir's reserved `.bucketfs/` folder (never prefetched or uploaded). */
export function isReservedPath(rel: string): boolean {
  return rel === RESERVED_DIR || rel.startsWith(`${RESERVED_DIR}/`);
}

/** Of the keys under `commitsPrefix(prefix)`, the one with the highest sequence. */
export function latestRecordKey(prefix: string, keys: Iterable<string>): { key: string; seq: number } | null {
  let best: { key: string; seq: number } | null = null;
  for (const key of keys) {
    const seq = seqOfKey(prefix, key);
    if (seq !== null && (best === null || seq > best.seq)) best = { key, seq };
  }
  return best;
}

export interface BuildInput {
  prev: CommitRecord | null;
  prefix: string;
  runId: string;
  node: string;
  kind: CommitRecord["kind"];
  files: RecordFile[];
  symlinks: { path: string; target: string }[];
  dirs: string[];
  /** Keys prefetch could not read (kept out of `deleted`). */
  unreadable?: { key: string; etag: string }[];
  /** Mapped names of the workdir (only those of the record's paths are kept). */
  names?: MappedName[];
  now?: number;
}

/** The next record: sequence after `prev`, deletions carried forward and extended. */
export function buildRecord(inp: BuildInput): CommitRecord {
  const present = new Set<string>([...inp.files.map((f) => f.path), ...inp.symlinks.map((s) => s.path), ...inp.dirs]);
  const names = (inp.names ?? []).filter((n) => present.has(n.path));
  const unreadable = [...(inp.unreadable ?? [])].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  // Never in the workdir because S3 would not serve them: not a deletion by the workdir.
  for (const u of unreadable) if (u.key.startsWith(inp.prefix)) present.add(u.key.slice(inp.prefix.length));
  const deleted = new Map<string, string>();
  if (inp.prev !== null) {
    for (const d of inp.prev.deleted) if (!present.has(d.path)) deleted.set(d.path, d.etag);
    for (const f of inp.prev.files) {
      if (!present.has(f.path) && f.etag !== "") deleted.set(f.path, f.etag);
    }
  }
  const byPath = <T extends { path: string }>(a: T, b: T) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
  return {
    v: 1,
    seq: (inp.prev?.seq ?? 0) + 1,
    runId: inp.runId,
    node: inp.node,
    kind: inp.kind,
    createdMs: inp.now ?? Date.now(),
    prefix: inp.prefix,
    files: [...inp.files].sort(byPath),
    symlinks: [...inp.symlinks].sort(byPath),
    dirs: [...inp.dirs].sort(),
    deleted: [...deleted].map(([path, etag]) => ({ path, etag })).sort(byPath),
    ...(unreadable.length > 0 ? { unreadable } : {}),
    ...(names.length > 0 ? { names } : {}),
  };
}

/** A record read from S3, checked field by field; throws with the reason when it is not one. */
export function parseRecord(body: Uint8Array, prefix: string): CommitRecord {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch (err) {
    throw new Error(`not JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  const r = v as Partial<CommitRecord> | null;
  if (typeof r !== "object" || r === null || r.v !== 1) throw new Error("not a version-1 commit record");
  if (!Number.isSafeInteger(r.seq) || (r.seq as number) < 1) throw new Error("bad seq");
  if (r.prefix !== prefix) throw new Error(`record is for prefix ${JSON.stringify(r.prefix)}, not ${JSON.stringify(prefix)}`);
  const okPath = (p: unknown): p is string => typeof p === "string" && keyProblem(p) === null && !isReservedPath(p);
  const okNum = (n: unknown) => typeof n === "number" && Number.isFinite(n) && n >= 0;
  const files = Array.isArray(r.files) ? r.files : null;
  const symlinks = Array.isArray(r.symlinks) ? r.symlinks : null;
  const dirs = Array.isArray(r.dirs) ? r.dirs : null;
  const deleted = Array.isArray(r.deleted) ? r.deleted : null;
  if (!files || !symlinks || !dirs || !deleted) throw new Error("missing files/symlinks/dirs/deleted");
  for (const f of files) {
    if (!okPath(f?.path) || !okNum(f.size) || !okNum(f.mtimeMs) || !okNum(f.mode) || typeof f.etag !== "string" ||
      (f.crc64nvme !== undefined && (typeof f.crc64nvme !== "string" || !/^[A-Za-z0-9+/]{11}=$/.test(f.crc64nvme)))) {
      throw new Error(`bad file entry ${JSON.stringify(f).slice(0, 200)}`);
    }
  }
  for (const s of symlinks) {
    if (!okPath(s?.path) || typeof s.target !== "string" || s.target === "" || s.target.includes("\0")) {
      throw new Error(`bad symlink entry ${JSON.stringify(s).slice(0, 200)}`);
    }
  }
  for (const d of dirs) if (!okPath(d)) throw new Error(`bad directory entry ${JSON.stringify(d).slice(0, 200)}`);
  for (const d of deleted) {
    if (!okPath(d?.path) || typeof d.etag !== "string") throw new Error(`bad deleted entry ${JSON.stringify(d).slice(0, 200)}`);
  }
  if (r.names !== undefined) {
    if (!Array.isArray(r.names)) throw new Error("bad names list");
    for (const n of r.names) {
      if (!okPath(n?.path) || typeof n.raw !== "string") throw new Error(`bad names entry ${JSON.stringify(n).slice(0, 200)}`);
    }
  }
  if (r.unreadable !== undefined) {
    if (!Array.isArray(r.unreadable)) throw new Error("bad unreadable list");
    for (const u of r.unreadable) {
      if (typeof u?.key !== "string" || typeof u.etag !== "string") throw new Error(`bad unreadable entry ${JSON.stringify(u).slice(0, 200)}`);
    }
  }
  return r as CommitRecord;
}

/** What prefetch does differently because of a record. */
export interface PrefetchPlan {
  /** Remote keys (relative to the prefix) not to download: deleted locally after bucketfs uploaded them. */
  skipDeleted: Set<string>;
  symlinks: { path: string; target: string }[];
  dirs: string[];
}

export function prefetchPlan(record: CommitRecord | null, remote: Iterable<Pick<ObjectInfo, "key" | "etag">>): PrefetchPlan {
  const plan: PrefetchPlan = { skipDeleted: new Set(), symlinks: record?.symlinks ?? [], dirs: record?.dirs ?? [] };
  if (record === null) return plan;
  const deleted = new Map(record.deleted.map((d) => [d.path, d.etag]));
  for (const o of remote) {
    const rel = o.key.startsWith(record.prefix) ? o.key.slice(record.prefix.length) : null;
    if (rel !== null && deleted.get(rel) === o.etag) plan.skipDeleted.add(rel);
  }
  return plan;
}

export interface VerifyDifference {
  path: string;
  problem: "missing" | "size" | "etag" | "checksum";
  expected: string;
  actual: string;
}

/** An object as `verify` sees it: listed, and its full-object CRC64NVME when S3 has one (HEAD). */
export type VerifiedObject = Pick<ObjectInfo, "key" | "size" | "etag"> & { crc64nvme?: string };

/**
 * Every way S3 (objects under the prefix) differs from the record's files: missing, size,
 * ETag, and the full-object CRC64NVME where both the record and S3 have one.
 */
export function verifyRecord(record: CommitRecord, remote: Iterable<VerifiedObject>): VerifyDifference[] {
  const byRel = new Map<string, VerifiedObject>();
  for (const o of remote) if (o.key.startsWith(record.prefix)) byRel.set(o.key.slice(record.prefix.length), o);
  const out: VerifyDifference[] = [];
  for (const f of record.files) {
    const o = byRel.get(f.path);
    if (o === undefined) out.push({ path: f.path, problem: "missing", expected: `${f.size} bytes`, actual: "no object" });
    else if (o.size !== f.size) out.push({ path: f.path, problem: "size", expected: `${f.size} bytes`, actual: `${o.size} bytes` });
    else if (f.etag !== "" && o.etag !== f.etag) out.push({ path: f.path, problem: "etag", expected: f.etag, actual: o.etag });
    else if (f.crc64nvme !== undefined && o.crc64nvme !== undefined && o.crc64nvme !== f.crc64nvme) {
      out.push({ path: f.path, problem: "checksum", expected: `crc64nvme ${f.crc64nvme}`, actual: `crc64nvme ${o.crc64nvme}` });
    }
  }
  return out;
}
