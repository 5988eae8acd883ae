/**
 * Test helper: typed async wrapper around test/helpers/s3tool.py, an
 * INDEPENDENT S3 client (boto3 from Debian's python3-boto3, run with
 * /usr/bin/python3) that tests use to put objects into, and verify objects in,
 * the test S3 server without going through bucketfs code.
 *
 * It is NOT bucketfs' S3 layer, and not fast: each call starts a Python
 * process (~0.3 s), so batch with putMany()/deleteMany() where possible.
 * Override the interpreter with BUCKETFS_S3TOOL_PYTHON if ever needed.
 */
import { join } from "node:path";

/** Where and how to reach an S3 server (an S3Server from s3server.ts fits). */
export interface S3Endpoint {
  endpoint: string;
  accessKey: string;
  secretKey: string;
  region: string;
  /** The certificate to trust for an https endpoint (test/helpers/s3server.ts `tls`). */
  caFile?: string;
}

/** Object body for put(): a local file, a UTF-8 string, or raw bytes. */
export type PutBody = { file: string } | { text: string } | { bytes: Uint8Array };

export interface PutOptions {
  /** User metadata (x-amz-meta-*); S3 lowercases the keys. */
  metadata?: Record<string, string>;
  contentType?: string;
  /** Upload with CreateMultipartUpload/UploadPart/Complete instead of one PutObject. */
  multipart?: boolean;
  /** Part size for multipart uploads in bytes (default 8 MiB, at least 5 MiB). */
  partSize?: number;
  /** Every request carries this checksum (computed by s3tool.py itself); S3 stores it with the object. */
  checksum?: "crc32" | "crc32c" | "crc64nvme";
  /** Multipart: the size of each part (parts of unequal sizes), instead of `partSize`. */
  partSizes?: number[];
  /** Multipart: COMPOSITE (default for CRC32/CRC32C) or FULL_OBJECT (default for CRC64NVME). */
  checksumType?: "COMPOSITE" | "FULL_OBJECT";
}

/** HEAD with ChecksumMode ENABLED (optionally of one part), as boto3 reports it. */
export interface ChecksumsResult {
  etag: string;
  size: number;
  partsCount: number | null;
  checksumType: string | null;
  crc32?: string;
  crc32c?: string;
  crc64nvme?: string;
  sha1?: string;
  sha256?: string;
}

export interface PutResult {
  key: string;
  size: number;
  /** ETag without quotes. */
  etag: string;
  /** sha256 (hex) of the bytes sent. */
  sha256: string;
}

/** Keys are `keys`, or `count` keys `${prefix}${i}` (zero-padded); content is generated from key+size (see gen()). */
export interface PutManyOptions {
  keys?: string[];
  prefix?: string;
  count?: number;
  /** Size of every object, or use `sizes` (one per key). */
  size?: number;
  sizes?: number[];
  /** Parallel uploads (default 16). */
  workers?: number;
}

export interface GetOptions {
  /** Also write the object to this local file. */
  path?: string;
  /** HTTP Range header value, e.g. "bytes=0-99". */
  range?: string;
}

export interface GetResult {
  size: number;
  sha256: string;
  etag: string;
}

export interface HeadResult {
  size: number;
  etag: string;
  lastModifiedMs: number;
  metadata: Record<string, string>;
  contentType: string | null;
}

export interface ListedObject {
  key: string;
  size: number;
  etag: string;
  lastModifiedMs: number;
}

export interface ListResult {
  /** All objects under the prefix (all pages), in S3 (lexicographic) order. */
  objects: ListedObject[];
  /** Common prefixes, only when `recursive: false`. */
  prefixes: string[];
  /** How many ListObjectsV2 pages were fetched. */
  pages: number;
}

export interface ListOptions {
  prefix?: string;
  /** Default true; false lists one level (delimiter "/") and fills `prefixes`. */
  recursive?: boolean;
  /** MaxKeys per ListObjectsV2 request (server default 1000). */
  pageSize?: number;
}

export interface S3Tool {
  mkbucket(bucket: string): Promise<{ created: boolean }>;
  put(bucket: string, key: string, body: PutBody, opts?: PutOptions): Promise<PutResult>;
  putMany(bucket: string, opts: PutManyOptions): Promise<PutResult[]>;
  /**
   * boto3's `upload_file` with the client's and s3transfer's defaults (8 MiB multipart threshold
   * and parts; the checksum this botocore adds by default), as users' scripts upload; with
   * `checksums: false` the client only sends checksums where S3 requires them (botocore < 1.36,
   * old aws-cli): the object has an ETag only. What the defaults do depends on the boto3:
   * Debian's 1.26 adds no checksum; pip's 1.43 (s3transfer 0.17) adds CRC32, composite for a
   * multipart upload, full-object for one PUT. `python` picks the interpreter (hence the boto3)
   * for this call, instead of BUCKETFS_S3TOOL_PYTHON or /usr/bin/python3.
   */
  uploadFile(
    bucket: string,
    key: string,
    file: string,
    opts?: { checksums?: boolean; python?: string },
  ): Promise<{ key: string; size: number; etag: string; boto3: string; s3transfer: string }>;
  /** Writes the content putMany() generates for (key, size) to a local file. */
  gen(key: string, size: number, path: string): Promise<{ size: number; sha256: string }>;
  get(bucket: string, key: string, opts?: GetOptions): Promise<GetResult>;
  /** The object's bytes (or a range of them); for small objects. */
  getBytes(bucket: string, key: string, range?: string): Promise<Uint8Array>;
  /** null when the object does not exist. */
  head(bucket: string, key: string): Promise<HeadResult | null>;
  /** The checksums S3 holds for the object (or for part `partNumber` of it). */
  checksums(bucket: string, key: string, partNumber?: number): Promise<ChecksumsResult>;
  /** The checksum of these bytes, computed by s3tool.py (base64 of the big-endian value). */
  crc(algorithm: "crc32" | "crc32c" | "crc64nvme", body: PutBody): Promise<string>;
  list(bucket: string, opts?: ListOptions): Promise<ListResult>;
  deleteMany(bucket: string, which: { keys: string[] } | { prefix: string }): Promise<{ deleted: number }>;
  /** Multipart uploads in progress under `prefix` (ListMultipartUploads). */
  uploads(bucket: string, prefix: string): Promise<{ key: string; uploadId: string }[]>;
}

/** s3tool.py reported an error (S3 error code, or a Python exception name). */
export class S3ToolError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "S3ToolError";
  }
}

const SCRIPT = join(import.meta.dir, "s3tool.py");
const PYTHON = process.env.BUCKETFS_S3TOOL_PYTHON ?? "/usr/bin/python3";

type Json = Record<string, unknown>;

function isObj(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
function num(o: Json, k: string): number {
  const v = o[k];
  if (typeof v !== "number") throw new Error(`s3tool: field ${k} is not a number: ${JSON.stringify(v)}`);
  return v;
}
function str(o: Json, k: string): string {
  const v = o[k];
  if (typeof v !== "string") throw new Error(`s3tool: field ${k} is not a string: ${JSON.stringify(v)}`);
  return v;
}
function arr(o: Json, k: string): unknown[] {
  const v = o[k];
  if (!Array.isArray(v)) throw new Error(`s3tool: field ${k} is not an array`);
  return v;
}
function obj(v: unknown): Json {
  if (!isObj(v)) throw new Error(`s3tool: expected an object, got ${JSON.stringify(v)}`);
  return v;
}

function toPutResult(v: unknown): PutResult {
  const o = obj(v);
  return { key: str(o, "key"), size: num(o, "size"), etag: str(o, "etag"), sha256: str(o, "sha256") };
}

/** Runs one s3tool.py command and returns its JSON result (without the `ok` field). */
export async function runS3Tool(target: S3Endpoint, op: string, args: Json, python = PYTHON): Promise<Json> {
  const input = JSON.stringify({
    op,
    endpoint: target.endpoint,
    access_key: target.accessKey,
    secret_key: target.secretKey,
    region: target.region,
    ...args,
  });
  const proc = Bun.spawn({
    cmd: [python, SCRIPT, "-"],
    stdin: new TextEncoder().encode(input),
    stdout: "pipe",
    stderr: "pipe",
    // Isolated from any ~/.aws config or AWS_* variables of the machine.
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: process.env.HOME ?? "/root",
      LANG: "C.UTF-8",
      AWS_CONFIG_FILE: "/dev/null",
      AWS_SHARED_CREDENTIALS_FILE: "/dev/null",
      ...(target.caFile ? { AWS_CA_BUNDLE: target.caFile } : {}),
    },
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdout);
  } catch {
    throw new Error(`s3tool ${op}: exit ${code}, unparsable output: ${stdout.slice(0, 500)}\n${stderr.slice(-2000)}`);
  }
  const res = obj(parsed);
  if (res.ok !== true) {
    const err = isObj(res.error) ? res.error : {};
    const errCode = typeof err.code === "string" ? err.code : "Unknown";
    const msg = typeof err.message === "string" ? err.message : JSON.stringify(res);
    throw new S3ToolError(errCode, `s3tool ${op}: ${errCode}: ${msg}`);
  }
  return res;
}

function putBodyArgs(body: PutBody): Json {
  if ("file" in body) return { file: body.file };
  if ("text" in body) return { content_utf8: body.text };
  return { content_b64: Buffer.from(body.bytes).toString("base64") };
}

/** An independent (boto3) S3 client bound to one server. */
export function s3tool(server: S3Endpoint): S3Tool {
  const run = (op: string, args: Json): Promise<Json> => runS3Tool(server, op, args);
  return {
    async mkbucket(bucket) {
      const r = await run("mkbucket", { bucket });
      return { created: r.created === true };
    },
    async put(bucket, key, body, opts) {
      const r = await run("put", {
        bucket,
        key,
        ...putBodyArgs(body),
        ...(opts?.metadata !== undefined ? { metadata: opts.metadata } : {}),
        ...(opts?.contentType !== undefined ? { content_type: opts.contentType } : {}),
        ...(opts?.multipart === true ? { multipart: true } : {}),
        ...(opts?.partSize !== undefined ? { part_size: opts.partSize } : {}),
        ...(opts?.checksum !== undefined ? { checksum: opts.checksum } : {}),
        ...(opts?.checksumType !== undefined ? { checksum_type: opts.checksumType } : {}),
        ...(opts?.partSizes !== undefined ? { part_sizes: opts.partSizes } : {}),
      });
      return toPutResult(r);
    },
    async putMany(bucket, opts) {
      const args: Json = { bucket };
      if (opts.keys !== undefined) args.keys = opts.keys;
      if (opts.prefix !== undefined) args.prefix = opts.prefix;
      if (opts.count !== undefined) args.count = opts.count;
      if (opts.size !== undefined) args.size = opts.size;
      if (opts.sizes !== undefined) args.sizes = opts.sizes;
      if (opts.workers !== undefined) args.workers = opts.workers;
      const r = await run("put-many", args);
      return arr(r, "objects").map(toPutResult);
    },
    async uploadFile(bucket, key, file, opts) {
      const args = { bucket, key, file, checksums: opts?.checksums === false ? "when_required" : "default" };
      const r = await runS3Tool(server, "upload-file", args, opts?.python);
      return { key: str(r, "key"), size: num(r, "size"), etag: str(r, "etag"), boto3: str(r, "boto3"), s3transfer: str(r, "s3transfer") };
    },
    async uploads(bucket, prefix) {
      const r = await run("uploads", { bucket, prefix });
      return (Array.isArray(r.uploads) ? r.uploads : []).map((u) => {
        const o = obj(u);
        return { key: str(o, "key"), uploadId: str(o, "upload_id") };
      });
    },
    async gen(key, size, path) {
      const r = await run("gen", { key, size, path });
      return { size: num(r, "size"), sha256: str(r, "sha256") };
    },
    async get(bucket, key, opts) {
      const r = await run("get", {
        bucket,
        key,
        ...(opts?.path !== undefined ? { path: opts.path } : {}),
        ...(opts?.range !== undefined ? { range: opts.range } : {}),
      });
      return { size: num(r, "size"), sha256: str(r, "sha256"), etag: str(r, "etag") };
    },
    async getBytes(bucket, key, range) {
      const r = await run("get", {
        bucket,
        key,
        return_content: true,
        ...(range !== undefined ? { range } : {}),
      });
      return new Uint8Array(Buffer.from(str(r, "content_b64"), "base64"));
    },
    async head(bucket, key) {
      const r = await run("head", { bucket, key });
      if (r.exists !== true) return null;
      const meta: Record<string, string> = {};
      for (const [k, v] of Object.entries(obj(r.metadata))) {
        if (typeof v === "string") meta[k] = v;
      }
      return {
        size: num(r, "size"),
        etag: str(r, "etag"),
        lastModifiedMs: num(r, "last_modified_ms"),
        metadata: meta,
        contentType: typeof r.content_type === "string" ? r.content_type : null,
      };
    },
    async checksums(bucket, key, partNumber) {
      const r = await run("checksums", { bucket, key, ...(partNumber !== undefined ? { part_number: partNumber } : {}) });
      const out: ChecksumsResult = {
        etag: str(r, "etag"), size: num(r, "size"),
        partsCount: typeof r.parts_count === "number" ? r.parts_count : null,
        checksumType: typeof r.checksum_type === "string" ? r.checksum_type : null,
      };
      for (const alg of ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"] as const) {
        if (typeof r[alg] === "string") out[alg] = r[alg];
      }
      return out;
    },
    async crc(algorithm, body) {
      return str(await run("crc", { algorithm, ...putBodyArgs(body) }), "value");
    },
    async list(bucket, opts) {
      const r = await run("list", {
        bucket,
        prefix: opts?.prefix ?? "",
        recursive: opts?.recursive ?? true,
        ...(opts?.pageSize !== undefined ? { page_size: opts.pageSize } : {}),
      });
      const objects = arr(r, "objects").map((v): ListedObject => {
        const o = obj(v);
        return {
          key: str(o, "key"),
          size: num(o, "size"),
          etag: str(o, "etag"),
          lastModifiedMs: num(o, "last_modified_ms"),
        };
      });
      const prefixes = arr(r, "prefixes").filter((p): p is string => typeof p === "string");
      return { objects, prefixes, pages: num(r, "pages") };
    },
    async deleteMany(bucket, which) {
      const r = await run("delete-many", { bucket, ...which });
      return { deleted: num(r, "deleted") };
    },
  };
}
