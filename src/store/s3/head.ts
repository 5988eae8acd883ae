/**
 * HeadObject: https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html
 *
 * Is: one HEAD (retried by request.ts), 404 as `null`, the object's size, ETag, Last-Modified,
 * user metadata and whether its ETag may serve as an MD5. Also `hasPrefix`, a one-key
 * ListObjectsV2. Is not: a listing.
 */
import type { ObjectInfo } from "../types.ts";
import { listPage } from "./list.ts";
import { etagNotMd5, send, unquote, userMeta, type S3Context } from "./request.ts";

export function infoFromHeaders(key: string, h: Headers, size: number): ObjectInfo {
  const lm = h.get("last-modified");
  const info: ObjectInfo = { key, size, lastModifiedMs: lm ? Date.parse(lm) : 0, etag: unquote(h.get("etag")), meta: userMeta(h) };
  if (etagNotMd5(h)) info.etagNotMd5 = true;
  return info;
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
