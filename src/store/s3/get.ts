/**
 * GetObject: https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html
 *
 * Is: ranged GETs streamed to a sink (a retry resumes at the first byte not yet delivered), and
 * whole-object downloads to a file, checked as they stream by against what S3 says of the
 * object (checksum.ts `bodyCheck`; asked for with x-amz-checksum-mode: ENABLED). A body that does
 * not match is fetched again by the request path's retry policy; one that stays wrong fails with
 * kind "corrupt" and an error log line naming the key. Is not: the cache (which owns temp names
 * and renames) or the check of ranges against the whole object (cache/object-digest.ts).
 */
import { open, type FileHandle } from "node:fs/promises";
import { fmtBytes, logger } from "../../util/log.ts";
import { SMALL_OBJECT_MAX, StoreError, type DownloadOptions, type ObjectInfo } from "../types.ts";
import { s3Error } from "./errors.ts";
import { bodyCheck } from "../checksum.ts";
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

/** The whole object into `destPath`, checked; fsynced unless `durable: false`. */
export async function download(ctx: S3Context, key: string, destPath: string, opts: DownloadOptions = {}): Promise<ObjectInfo> {
  const { signal, onProgress } = opts;
  const req = { op: "GetObject", method: "GET" as const, key, headers: { "x-amz-checksum-mode": "ENABLED", "accept-encoding": "identity" } };
  return send(ctx, req, async (res, a) => {
    const expected = Number(res.headers.get("content-length") ?? NaN);
    const etag = unquote(res.headers.get("etag"));
    const info = infoFromHeaders(key, res.headers, 0);
    const check = bodyCheck(res.headers, etag, info.etagNotMd5 === true);
    let file: FileHandle;
    try {
      file = await open(destPath, "w", 0o600);
    } catch (err) {
      throw new StoreError("other", `[s3] GetObject ${ctx.bucket}/${key}: cannot write ${destPath}: ${(err as Error).message}`, {
        cause: err, op: "GetObject", bucket: ctx.bucket, key,
      });
    }
    let written = 0;
    try {
      if (res.body) {
        for await (const chunk of res.body) {
          a.arm();
          check?.update(chunk);
          let off = 0;
          while (off < chunk.byteLength) {
            const { bytesWritten } = await file.write(chunk, off, chunk.byteLength - off);
            off += bytesWritten;
          }
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
        throw new StoreError("corrupt", `[s3] GetObject ${ctx.bucket}/${key}: the body does not match its ${check.what} (attempt ${a.n})`, {
          op: "GetObject", bucket: ctx.bucket, key, code: "BodyDigestMismatch",
        });
      }
      if (opts.durable !== false) await file.sync();
    } finally {
      await file.close();
    }
    log.debug(`GET ${ctx.bucket}/${key}: ${fmtBytes(written)}${check ? `, ${check.what} verified` : ", not verifiable (multipart or encrypted)"}`);
    info.size = written;
    return info;
  }, signal);
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
      throw new StoreError("corrupt", `[s3] GetObject ${ctx.bucket}/${key}: the body does not match its ${check.what} (attempt ${a.n})`, { ...where, code: "BodyDigestMismatch" });
    }
    return { body, etag };
  }, signal);
}
