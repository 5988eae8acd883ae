/**
 * GetObject: https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html
 *
 * Is: ranged GETs streamed to a sink (a retry resumes at the first byte not yet delivered),
 * part GETs (`getPart`, GET partNumber=N, the part checked against its own checksum when asked),
 * and whole-object downloads to a file, checked as they stream by (a body of at most 1 MiB:
 * collected, checked in memory, then written in one write) against what S3 says of the
 * object (checksum.ts; asked for with x-amz-checksum-mode: ENABLED): a full-object checksum or
 * a single-part MD5 ETag over the one GET's body; a composite checksum or a multipart ETag part
 * by part (`downloadParts`: each part's checksum or MD5, then the composite or the ETag of the
 * parts; a part answer without its own checksum turns the object's check into its multipart
 * ETag's). A body that does not match is fetched again by the request path's retry policy (a
 * multipart body part by part, or whole for an ETag mismatch); one that stays wrong fails with
 * kind "corrupt" and an error log line naming the key. Is not: the cache (which owns temp names
 * and renames) or the check of ranges against the whole object (cache/object-digest.ts).
 */
import { closeSync, open as openCb, writeSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { fmtBytes, logger } from "../../util/log.ts";
import { SMALL_OBJECT_MAX, StoreError, type DownloadOptions, type ObjectInfo } from "../types.ts";
import { s3Error } from "./errors.ts";
import {
  checksumFromHeaders, chooseVerification, partChecksumFromHeaders, compositeChecksum, describeVerification, multipartEtagOfDigests, newHasher,
  toBase64, wholeBodyCheck, bodyCheck, type ChecksumAlgorithm, type Hasher, type ObjectChecksum,
} from "../checksum.ts";
import type { PartAnswer } from "../types.ts";
import { infoFromHeaders } from "./head.ts";
import { etagNotMd5, send, unquote, type S3Context } from "./request.ts";

const log = logger("s3");

export async function streamRange(
  ctx: S3Context,
  key: string,
  start: number,
  end: number,
  sink: (chunk: Uint8Array, pos: number) => Promise<void>,
  signal?: AbortSignal,
  ifMatch?: string,
): Promise<number> {
  if (!(Number.isSafeInteger(start) && Number.isSafeInteger(end) && start >= 0)) {
    throw new StoreError("other", `[s3] GetObject ${ctx.bucket}/${key}: bad range ${start}-${end}`, { op: "GetObject", bucket: ctx.bucket, key });
  }
  if (start >= end) return 0;
  let delivered = 0;
  const headers = (): Record<string, string> => {
    const h: Record<string, string> = { range: `bytes=${start + delivered}-${end - 1}`, "accept-encoding": "identity" };
    if (ifMatch) h["if-match"] = `"${ifMatch}"`;
    return h;
  };
  const req = { op: "GetObject", method: "GET" as const, key, headers, ok: (s: number) => s === 200 || s === 206 || s === 416 };
  return send(ctx, req, async (res, a) => {
    if (res.status === 416 || !res.body) return delivered;
    const from = start + delivered;
    // 206 starts at `from`; a server that ignores Range sends the whole object (200) from 0.
    let bodyPos = res.status === 200 ? 0 : from;
    for await (const chunk of res.body) {
      a.arm();
      const lo = Math.max(start + delivered, bodyPos);
      const hi = Math.min(end, bodyPos + chunk.byteLength);
      if (hi > lo) {
        await sink(chunk.subarray(lo - bodyPos, hi - bodyPos), lo);
        delivered += hi - lo;
      }
      bodyPos += chunk.byteLength;
      if (bodyPos >= end) break;
    }
    const expected = Number(res.headers.get("content-length") ?? NaN);
    if (res.status === 206 && Number.isFinite(expected) && bodyPos - from < expected && bodyPos < end) {
      throw new StoreError("network", `[s3] GetObject ${ctx.bucket}/${key}: body ended after ${bodyPos - from} of ${expected} bytes`, {
        op: "GetObject", bucket: ctx.bucket, key, code: "IncompleteBody",
      });
    }
    return delivered;
  }, signal);
}

/** `bytes a-b/total` as [a, b + 1, total], or undefined. */
function contentRange(v: string | null): [number, number, number] | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(v ?? "");
  return m ? [Number(m[1]), Number(m[2]) + 1, Number(m[3])] : undefined;
}

async function writeAll(file: FileHandle, chunk: Uint8Array, pos: number): Promise<void> {
  let off = 0;
  while (off < chunk.byteLength) {
    const { bytesWritten } = await file.write(chunk, off, chunk.byteLength - off, pos + off);
    off += bytesWritten;
  }
}

/** Bodies up to this size (declared by Content-Length) are collected and written to the cache file at once. */
const ONE_WRITE_MAX = 1024 * 1024;

/** A body of `expected` bytes, into one buffer. */
async function collect(
  ctx: S3Context, key: string, body: AsyncIterable<Uint8Array> | null, expected: number, arm: () => void,
  onProgress: ((n: number) => void) | undefined,
): Promise<Uint8Array> {
  const out = new Uint8Array(expected);
  let n = 0;
  if (body) {
    for await (const chunk of body) {
      arm();
      if (n + chunk.byteLength > expected) {
        throw new StoreError("network", `[s3] GetObject ${ctx.bucket}/${key}: more bytes than its Content-Length ${expected}`, {
          op: "GetObject", bucket: ctx.bucket, key,
        });
      }
      out.set(chunk, n);
      n += chunk.byteLength;
      onProgress?.(n);
    }
  }
  if (n !== expected) {
    throw new StoreError("network", `[s3] GetObject ${ctx.bucket}/${key}: body ended after ${n} of ${expected} bytes`, {
      op: "GetObject", bucket: ctx.bucket, key, code: "IncompleteBody",
    });
  }
  return out;
}

/**
 * A new file at `destPath` (0600) as a plain fd: created on the thread pool (a create costs
 * 0.1-1 ms of kernel time on ext4 here), so the body keeps arriving meanwhile.
 */
function createFd(ctx: S3Context, key: string, destPath: string): Promise<number> {
  return new Promise((resolve, reject) => {
    openCb(destPath, "w", 0o600, (err, fd) => {
      if (!err) return resolve(fd);
      reject(new StoreError("other", `[s3] GetObject ${ctx.bucket}/${key}: cannot write ${destPath}: ${err.message}`, {
        cause: err, op: "GetObject", bucket: ctx.bucket, key,
      }));
    });
  });
}

/** `body` as the whole content of the new file `fd`, in one synchronous write; the fd is closed. */
function writeWhole(fd: number, body: Uint8Array): void {
  try {
    let off = 0;
    while (off < body.byteLength) off += writeSync(fd, body, off, body.byteLength - off, off);
  } finally {
    closeSync(fd);
  }
}

function corrupt(ctx: S3Context, key: string, msg: string, code = "BodyDigestMismatch"): StoreError {
  return new StoreError("corrupt", `[s3] GetObject ${ctx.bucket}/${key}: ${msg}`, { op: "GetObject", bucket: ctx.bucket, key, code });
}

export interface PartOptions {
  signal?: AbortSignal;
  ifMatch?: string;
  /** Verify the part against its own checksum of this algorithm (a missing header fails the attempt). */
  check?: ChecksumAlgorithm;
  /** Called at the start of every attempt's body: the sink sees the part again from its start. */
  restart?: () => void;
}

/** Part `n` of `key` (GET partNumber=n), streamed to `sink` with object offsets; see ObjectStore.getPart. */
export async function getPart(
  ctx: S3Context, key: string, n: number, sink: (chunk: Uint8Array, pos: number) => Promise<void>, opts: PartOptions = {},
): Promise<PartAnswer> {
  const headers: Record<string, string> = { "x-amz-checksum-mode": "ENABLED", "accept-encoding": "identity" };
  if (opts.ifMatch) headers["if-match"] = `"${opts.ifMatch}"`;
  const req = { op: "GetObject", method: "GET" as const, key, query: [["partNumber", String(n)]] as [string, string][], headers };
  return send(ctx, req, async (res, a) => {
    opts.restart?.();
    const declared = Number(res.headers.get("content-length") ?? NaN);
    const range = contentRange(res.headers.get("content-range"));
    // A single-part object answers partNumber=1 with the whole object (200, no Content-Range).
    const [start, end, size] = range ?? (Number.isFinite(declared) ? [0, declared, declared] : [0, NaN, NaN]);
    if (!Number.isFinite(end) || (Number.isFinite(declared) && end - start !== declared)) {
      throw new StoreError("other", `[s3] GetObject ${ctx.bucket}/${key} part ${n}: no usable Content-Range/Content-Length`, { op: "GetObject", bucket: ctx.bucket, key });
    }
    const count = Number(res.headers.get("x-amz-mp-parts-count") ?? 1) || 1;
    let hasher: Hasher | undefined;
    let expected: string | undefined;
    if (opts.check !== undefined) {
      // Without its own checksum the part is delivered unchecked (`checksum` undefined): the
      // caller checks the object another way (its multipart ETag) or refuses it.
      expected = partChecksumFromHeaders(res.headers, opts.check);
      if (expected !== undefined) hasher = newHasher(opts.check);
    }
    let pos = start;
    if (res.body) {
      for await (const chunk of res.body) {
        a.arm();
        if (pos + chunk.byteLength > end) throw new StoreError("network", `[s3] GetObject ${ctx.bucket}/${key} part ${n}: more bytes than its ${end - start}`, { op: "GetObject", bucket: ctx.bucket, key });
        hasher?.update(chunk);
        await sink(chunk, pos);
        pos += chunk.byteLength;
      }
    }
    if (pos !== end) {
      throw new StoreError("network", `[s3] GetObject ${ctx.bucket}/${key} part ${n}: body ended after ${pos - start} of ${end - start} bytes`, {
        op: "GetObject", bucket: ctx.bucket, key, code: "IncompleteBody",
      });
    }
    if (hasher !== undefined && toBase64(hasher.digest()) !== expected) {
      throw corrupt(ctx, key, `part ${n} does not match its x-amz-checksum-${opts.check} (attempt ${a.n})`);
    }
    const out: PartAnswer = { start, end, size, count, etag: unquote(res.headers.get("etag")) };
    if (expected !== undefined) out.checksum = expected;
    return out;
  }, opts.signal);
}

/** Whole-object downloads of multipart objects are fetched again at most this many times when the ETag of their parts does not match. */
const PART_ROUNDS = 3;

/**
 * A multipart object without a full-object checksum, part by part into `file`: each part
 * checked against its own checksum (composite; retried per part by getPart), or hashed (MD5)
 * and the ETag of the parts compared at the end (the whole object fetched again on a mismatch).
 */
async function downloadParts(
  ctx: S3Context, key: string, file: FileHandle, info: ObjectInfo, checksum: ObjectChecksum | undefined, opts: DownloadOptions,
): Promise<{ size: number; what: string }> {
  let composite = checksum?.type === "COMPOSITE" ? checksum : undefined;
  let what = composite ? `composite ${composite.algorithm} of each part` : "multipart ETag (MD5 of each part)";
  const etagUsable = info.etagNotMd5 !== true && /^[0-9a-f]{32}-\d+$/i.test(info.etag);
  for (let round = 1; ; round++) {
    const md5s: Uint8Array[] = [];
    const sums: Uint8Array[] = [];
    let count = 1;
    let size = 0;
    let written = 0;
    for (let n = 1; n <= count; n++) {
      let md5: Hasher | undefined;
      const part = await getPart(ctx, key, n, async (chunk, pos) => {
        md5?.update(chunk);
        await writeAll(file, chunk, pos);
        opts.onProgress?.(written + chunk.byteLength);
      }, {
        ...(opts.signal ? { signal: opts.signal } : {}), ifMatch: info.etag,
        ...(composite ? { check: composite.algorithm } : {}),
        restart: () => { md5 = composite ? undefined : newHasher("md5"); },
      });
      if (composite && part.checksum === undefined) {
        // S3 did not say this part's checksum: check the whole object by its multipart ETag instead.
        if (!etagUsable) throw corrupt(ctx, key, `part ${n} came without its x-amz-checksum-${composite.algorithm}, and the ETag cannot check it`, "PartChecksumMissing");
        log.warn(`GET ${ctx.bucket}/${key}: part ${n} came without its x-amz-checksum-${composite.algorithm}; checking the object by its multipart ETag instead`);
        composite = undefined;
        what = "multipart ETag (MD5 of each part; S3 sent no part checksum)";
        break;
      }
      if (n === 1) {
        count = part.count;
        size = part.size;
      } else if (part.start !== written) {
        throw corrupt(ctx, key, `part ${n} starts at ${part.start}, not where part ${n - 1} ended (${written})`, "PartLayout");
      }
      written = part.end;
      if (md5) md5s.push(md5.digest());
      if (part.checksum !== undefined) sums.push(Buffer.from(part.checksum, "base64"));
    }
    if (!composite && md5s.length !== count) continue; // switched to the ETag check: fetch again, hashing every part
    if (written !== size) throw corrupt(ctx, key, `its ${count} parts end at ${written} of ${size} bytes`, "PartLayout");
    await file.truncate(size);
    if (composite) {
      const want = `${composite.value}-${composite.parts ?? count}`;
      const got = compositeChecksum(composite.algorithm, sums);
      // Every part matched its own checksum: a different composite means the answers' checksums were not S3's.
      if (got === want) return { size, what };
      if (round >= PART_ROUNDS) throw corrupt(ctx, key, `the checksums of its parts make ${got}, not ${want}`);
    } else {
      const got = multipartEtagOfDigests(md5s);
      if (got === info.etag.toLowerCase()) return { size, what };
      if (round >= PART_ROUNDS) throw corrupt(ctx, key, `the MD5s of its ${count} parts make ETag ${got}, not ${info.etag}, after ${round} rounds`);
    }
    log.warn(`GET ${ctx.bucket}/${key}: the parts do not match the object's ${what}; fetching them again (round ${round + 1})`);
  }
}

/** Part-by-part download needed: a composite checksum, or a multipart ETag without a full-object checksum. */
function needsParts(etag: string, checksum: ObjectChecksum | undefined, notMd5: boolean): boolean {
  if (checksum?.type === "COMPOSITE") return true;
  if (checksum !== undefined) return false;
  return !notMd5 && /^[0-9a-f]{32}-\d+$/i.test(etag);
}

/** The whole object into `destPath`, checked; fsynced unless `durable: false`. */
export async function download(ctx: S3Context, key: string, destPath: string, opts: DownloadOptions = {}): Promise<ObjectInfo> {
  const { signal, onProgress } = opts;
  const openDest = async (): Promise<FileHandle> => {
    try {
      return await open(destPath, "w", 0o600);
    } catch (err) {
      throw new StoreError("other", `[s3] GetObject ${ctx.bucket}/${key}: cannot write ${destPath}: ${(err as Error).message}`, {
        cause: err, op: "GetObject", bucket: ctx.bucket, key,
      });
    }
  };
  const req = { op: "GetObject", method: "GET" as const, key, headers: { "x-amz-checksum-mode": "ENABLED", "accept-encoding": "identity" } };
  const first = await send(ctx, req, async (res, a) => {
    const expected = Number(res.headers.get("content-length") ?? NaN);
    const etag = unquote(res.headers.get("etag"));
    const info = infoFromHeaders(key, res.headers, 0);
    const checksum = checksumFromHeaders(res.headers);
    // Checked part by part instead: this answer's body is not read (the request path cancels it).
    if (needsParts(etag, checksum, info.etagNotMd5 === true)) return { info, checksum, parts: true };
    const v = chooseVerification({ etag, size: expected, ...(checksum ? { checksum } : {}), etagNotMd5: info.etagNotMd5 === true });
    const check = wholeBodyCheck(v);
    // A small body whose length is declared is collected in memory and written in one
    // synchronous open/write/close, not one awaited write per socket chunk.
    if (opts.durable === false && Number.isFinite(expected) && expected <= ONE_WRITE_MAX) {
      const fd = await createFd(ctx, key, destPath);
      let body: Uint8Array;
      try {
        body = await collect(ctx, key, res.body, expected, a.arm, onProgress);
        if (check !== undefined) {
          check.update(body);
          if (!check.matches()) throw corrupt(ctx, key, `the body does not match its ${check.what} (attempt ${a.n})`);
        }
      } catch (err) {
        closeSync(fd);
        throw err;
      }
      writeWhole(fd, body);
      info.size = body.byteLength;
      if (check) info.checkedWith = check.what;
      else info.unverified = true;
      if (log.enabled("debug")) log.debug(`GET ${ctx.bucket}/${key}: ${fmtBytes(body.byteLength)}, checked against ${describeVerification(v)}`);
      return { info, checksum, parts: false };
    }
    const file = await openDest();
    let written = 0;
    try {
      if (res.body) {
        for await (const chunk of res.body) {
          a.arm();
          check?.update(chunk);
          await writeAll(file, chunk, written);
          written += chunk.byteLength;
          onProgress?.(written);
        }
      }
      if (Number.isFinite(expected) && written !== expected) {
        throw new StoreError("network", `[s3] GetObject ${ctx.bucket}/${key}: body ended after ${written} of ${expected} bytes`, {
          op: "GetObject", bucket: ctx.bucket, key, code: "IncompleteBody",
        });
      }
      if (check !== undefined && !check.matches()) {
        throw corrupt(ctx, key, `the body does not match its ${check.what} (attempt ${a.n})`);
      }
      if (opts.durable !== false) await file.sync();
    } finally {
      await file.close();
    }
    info.size = written;
    if (check) info.checkedWith = check.what;
    else info.unverified = true;
    if (log.enabled("debug")) log.debug(`GET ${ctx.bucket}/${key}: ${fmtBytes(written)}, checked against ${describeVerification(v)}`);
    return { info, checksum, parts: false };
  }, signal);
  if (!first.parts) return first.info;
  const { info, checksum } = first;
  const file = await openDest();
  try {
    const { size, what } = await downloadParts(ctx, key, file, info, checksum, opts);
    if (opts.durable !== false) await file.sync();
    info.size = size;
    info.checkedWith = what;
    log.debug(`GET ${ctx.bucket}/${key}: ${fmtBytes(size)} part by part, checked against its ${what}`);
    return info;
  } finally {
    await file.close();
  }
}

/** A small object whole in memory with its ETag, checked like a download; null when absent. */
export async function getSmall(ctx: S3Context, key: string, signal?: AbortSignal): Promise<{ body: Uint8Array; etag: string } | null> {
  const where = { op: "GetObject", bucket: ctx.bucket, key };
  const req = {
    op: "GetObject", method: "GET" as const, key, headers: { "x-amz-checksum-mode": "ENABLED", "accept-encoding": "identity" },
    ok: (s: number) => (s >= 200 && s < 300) || s === 404,
  };
  return send(ctx, req, async (res, a) => {
    if (res.status === 404) {
      // A missing bucket is an error, not an absent record.
      const text = await res.text();
      if (text.includes("<Code>NoSuchBucket</Code>")) throw s3Error(where, 404, text);
      return null;
    }
    const declared = Number(res.headers.get("content-length") ?? NaN);
    if (declared > SMALL_OBJECT_MAX) {
      throw new StoreError("other", `[s3] GetObject ${ctx.bucket}/${key}: ${declared} bytes is too large for a record`, where);
    }
    const body = new Uint8Array(await res.arrayBuffer());
    a.arm();
    if (Number.isFinite(declared) && body.byteLength !== declared) {
      throw new StoreError("network", `[s3] GetObject ${ctx.bucket}/${key}: body ended after ${body.byteLength} of ${declared} bytes`, { ...where, code: "IncompleteBody" });
    }
    const etag = unquote(res.headers.get("etag"));
    const check = bodyCheck(res.headers, etag, etagNotMd5(res.headers));
    check?.update(body);
    if (check !== undefined && !check.matches()) {
      throw corrupt(ctx, key, `the body does not match its ${check.what} (attempt ${a.n})`);
    }
    return { body, etag };
  }, signal);
}
