/**
 * HeadObject: https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html
 *
 * Is: one HEAD (retried by request.ts), 404 as `null`, the object's size, ETag, Last-Modified,
 * user metadata and whether its ETag may serve as an MD5; `headIntegrity`, what S3 holds to
 * check the bytes (checksum, parts of a multipart object); `headPart`, what S3 says of one
 * part (its size and own checksum) without its bytes. Also `hasPrefix`, a one-key
 * ListObjectsV2. Is not: a listing.
 */
import type { ObjectInfo, PartHead } from "../types.ts";
import { checksumFromHeaders, partChecksumFromHeaders, type ChecksumAlgorithm, multipartEtagParts, uniformParts, type ObjectIntegrity } from "../checksum.ts";

/** Parts learned one HEAD each when their sizes differ (S3 allows 10000; past this, unverified). */
const MAX_PART_HEADS = 1000;
import { listPage } from "./list.ts";
import { etagNotMd5, send, unquote, userMeta, type S3Context } from "./request.ts";

export function infoFromHeaders(key: string, h: Headers, size: number): ObjectInfo {
  const lm = h.get("last-modified");
  const info: ObjectInfo = { key, size, lastModifiedMs: lm ? Date.parse(lm) : 0, etag: unquote(h.get("etag")), meta: userMeta(h) };
  if (etagNotMd5(h)) info.etagNotMd5 = true;
  return info;
}

/**
 * Part `n` of a multipart object without its bytes (ObjectStore.headPart): a HEAD partNumber=n
 * with checksum mode, If-Match `ifMatch`. S3 answers it as it answers GET partNumber=n: the
 * part's size (Content-Length), the parts count, and the part's own checksum.
 */
export function headPart(
  ctx: S3Context, key: string, n: number, opts: { signal?: AbortSignal; ifMatch?: string; algorithm: ChecksumAlgorithm },
): Promise<PartHead | null> {
  const headers: Record<string, string> = { "x-amz-checksum-mode": "ENABLED" };
  if (opts.ifMatch) headers["if-match"] = `"${opts.ifMatch}"`;
  const req = { op: "HeadObject", method: "HEAD" as const, key, query: [["partNumber", String(n)]] as [string, string][], headers, ok: (s: number) => (s >= 200 && s < 300) || s === 404 };
  return send(ctx, req, async (res) => {
    if (res.status === 404) return null;
    const out: PartHead = {
      size: Number(res.headers.get("content-length") ?? NaN),
      count: Number(res.headers.get("x-amz-mp-parts-count") ?? 1) || 1,
      etag: unquote(res.headers.get("etag")),
    };
    const checksum = partChecksumFromHeaders(res.headers, opts.algorithm);
    if (checksum !== undefined) out.checksum = checksum;
    return out;
  }, opts.signal);
}

export function headObject(ctx: S3Context, key: string, signal?: AbortSignal): Promise<ObjectInfo | null> {
  return send(ctx, { op: "HeadObject", method: "HEAD", key, ok: (s) => (s >= 200 && s < 300) || s === 404 }, async (res) => {
    if (res.status === 404) return null;
    return infoFromHeaders(key, res.headers, Number(res.headers.get("content-length") ?? 0));
  }, signal);
}

/** True when at least one key starts with `prefix`. */
export async function hasPrefix(ctx: S3Context, prefix: string, signal?: AbortSignal): Promise<boolean> {
  const page = await listPage(ctx, prefix, undefined, undefined, signal, 1);
  return page.objects.length > 0 || page.prefixes.length > 0;
}

/**
 * What S3 holds to check the object (ObjectStore.integrity): a HEAD with checksum mode, and for
 * a multipart object without a full-object checksum a HEAD partNumber=1 of the same version
 * (and one per part when the parts cannot all be part 1's size, or `everyPart` asks). When the
 * caller's ETag (`opts.etag`, from a listing) is a multipart one, the HEAD partNumber=1 goes
 * out beside the first HEAD, If-Match that ETag, so the two cost one round trip, not two; it is
 * used only when the object still has that ETag, and asked again after the first HEAD when it
 * failed.
 */
export async function headIntegrity(
  ctx: S3Context, key: string, signal?: AbortSignal, opts: { everyPart?: boolean; etag?: string } = {},
): Promise<ObjectIntegrity | null> {
  const head = (query: [string, string][], ifMatch?: string) => {
    const headers: Record<string, string> = { "x-amz-checksum-mode": "ENABLED" };
    if (ifMatch) headers["if-match"] = `"${ifMatch}"`;
    return send(ctx, { op: "HeadObject", method: "HEAD", key, query, headers, ok: (s) => (s >= 200 && s < 300) || s === 404 },
      async (res) => (res.status === 404 ? null : res.headers), signal);
  };
  const early = opts.etag !== undefined && multipartEtagParts(opts.etag) !== undefined
    ? head([["partNumber", "1"]], opts.etag).catch(() => undefined)
    : undefined;
  const h = await head([]);
  if (h === null) return null;
  const out: ObjectIntegrity = { etag: unquote(h.get("etag")), size: Number(h.get("content-length") ?? 0) };
  const checksum = checksumFromHeaders(h);
  if (checksum) out.checksum = checksum;
  if (etagNotMd5(h)) out.etagNotMd5 = true;
  if (multipartEtagParts(out.etag) !== undefined && (checksum === undefined || checksum.type === "COMPOSITE")) {
    let p = early !== undefined && out.etag === opts.etag ? await early : undefined;
    if (p === undefined) p = await head([["partNumber", "1"]], out.etag);
    const count = Number(p?.get("x-amz-mp-parts-count") ?? NaN);
    const size = Number(p?.get("content-length") ?? NaN);
    if (Number.isSafeInteger(count) && count >= 1 && Number.isSafeInteger(size) && size > 0) {
      out.parts = { count, size };
      const checksum1 = checksum?.type === "COMPOSITE" && p ? partChecksumFromHeaders(p, checksum.algorithm) : undefined;
      if (checksum1 !== undefined) out.parts.checksum1 = checksum1;
      // Not count-1 parts of part 1's size and a shorter last one: learn each part's size.
      if ((opts.everyPart || !uniformParts(count, size, out.size)) && count <= MAX_PART_HEADS) {
        const sizes = [size];
        for (let n = 2; n <= count; n++) sizes.push(Number((await head([["partNumber", String(n)]], out.etag))?.get("content-length") ?? NaN));
        if (sizes.every((s) => Number.isSafeInteger(s) && s > 0)) out.parts.sizes = sizes;
      }
    }
  }
  return out;
}
