/**
 * ListObjectsV2: https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html
 *
 * Is: one page per request (through request.ts, so retried like any other), every page of a
 * listing with a guard against servers that repeat or omit the continuation token, and
 * `encoding-type=url` so that any key, including ones with control characters that XML 1.0
 * cannot carry, arrives intact. A key that does not decode (bad %-escape, not UTF-8) or that no
 * path can hold (NUL) is skipped with one log line; it never fails its directory.
 * Is not: the namespace rules (fs/ decides which names it shows).
 */
import { logger } from "../../util/log.ts";
import { StoreError, type ObjectInfo } from "../types.ts";
import { send, unquote, xmlBlocks, xmlValue, type S3Context } from "./request.ts";

const log = logger("s3");

/** Pages a listing may take before we assume the server is looping. */
const MAX_LIST_PAGES = 1_000_000;

export interface Page {
  objects: ObjectInfo[];
  prefixes: string[];
  next: string | undefined;
}

/** `+` is a space and %XX a byte in S3's url encoding; undefined when it does not decode to UTF-8. */
export function decodeKey(raw: string): string | undefined {
  try {
    return decodeURIComponent(raw.replace(/\+/g, " "));
  } catch {
    return undefined;
  }
}

const warned = new Set<string>();
function skip(ctx: S3Context, raw: string, why: string): void {
  const id = `${ctx.bucket}\n${raw}`;
  if (warned.has(id)) return;
  if (warned.size > 10_000) warned.clear();
  warned.add(id);
  log.warn(`skipping key ${JSON.stringify(raw)} (as sent, url-encoded) in bucket ${ctx.bucket}: ${why}`);
}

function usableKey(ctx: S3Context, raw: string): string | undefined {
  const key = decodeKey(raw);
  if (key === undefined) {
    skip(ctx, raw, "it does not decode to UTF-8");
    return undefined;
  }
  if (key.includes("\0")) {
    skip(ctx, raw, "it contains a NUL byte");
    return undefined;
  }
  return key;
}

export async function listPage(
  ctx: S3Context,
  prefix: string,
  delimiter: string | undefined,
  token: string | undefined,
  signal?: AbortSignal,
  maxKeys?: number,
): Promise<Page> {
  const query: [string, string][] = [["list-type", "2"], ["encoding-type", "url"], ["prefix", prefix]];
  if (delimiter !== undefined) query.push(["delimiter", delimiter]);
  if (token !== undefined) query.push(["continuation-token", token]);
  if (maxKeys !== undefined) query.push(["max-keys", String(maxKeys)]);
  return send(ctx, { op: "ListObjectsV2", method: "GET", about: prefix, query }, async (res) => {
    const xml = await res.text();
    if (!xml.includes("<ListBucketResult")) {
      // A cut-off body: retried as a network failure by the request path.
      throw new StoreError("network", `[s3] ListObjectsV2 ${ctx.bucket}/${prefix}: incomplete answer (${xml.length} bytes)`, {
        op: "ListObjectsV2", bucket: ctx.bucket, key: prefix, code: "IncompleteBody",
      });
    }
    if (!xml.includes("</ListBucketResult>")) {
      throw new StoreError("network", `[s3] ListObjectsV2 ${ctx.bucket}/${prefix}: answer cut off after ${xml.length} bytes`, {
        op: "ListObjectsV2", bucket: ctx.bucket, key: prefix, code: "IncompleteBody",
      });
    }
    const encoded = xmlValue(xml, "EncodingType") === "url";
    const objects: ObjectInfo[] = [];
    for (const c of xmlBlocks(xml, "Contents")) {
      const raw = xmlValue(c, "Key") ?? "";
      const key = encoded ? usableKey(ctx, raw) : raw;
      if (key === undefined) continue;
      const lm = xmlValue(c, "LastModified");
      objects.push({
        key,
        size: Number(xmlValue(c, "Size") ?? 0),
        lastModifiedMs: lm ? Date.parse(lm) : 0,
        etag: unquote(xmlValue(c, "ETag")),
      });
    }
    const prefixes: string[] = [];
    for (const c of xmlBlocks(xml, "CommonPrefixes")) {
      const raw = xmlValue(c, "Prefix") ?? "";
      const p = encoded ? usableKey(ctx, raw) : raw;
      if (p !== undefined) prefixes.push(p);
    }
    const truncated = xmlValue(xml, "IsTruncated") === "true";
    return { objects, prefixes, next: truncated ? (xmlValue(xml, "NextContinuationToken") ?? "") : undefined };
  }, signal);
}

/**
 * Every page of one listing. Stops with an error (never silently) when the server claims more
 * pages but repeats or omits the continuation token.
 */
export async function* listPages(ctx: S3Context, prefix: string, delimiter: string | undefined, signal?: AbortSignal): AsyncGenerator<Page> {
  const seen = new Set<string>();
  let token: string | undefined;
  for (let page = 0; page < MAX_LIST_PAGES; page++) {
    const out = await listPage(ctx, prefix, delimiter, token, signal);
    yield out;
    if (out.next === undefined) return;
    if (out.next === "" || seen.has(out.next)) {
      throw new StoreError("other", `[s3] ListObjectsV2 ${ctx.bucket}/${prefix}: server says the listing continues but sent ${out.next === "" ? "no" : "a repeated"} continuation token`, {
        op: "ListObjectsV2", bucket: ctx.bucket, key: prefix,
      });
    }
    seen.add(out.next);
    token = out.next;
  }
  throw new StoreError("other", `[s3] ListObjectsV2 ${ctx.bucket}/${prefix}: more than ${MAX_LIST_PAGES} pages`, { op: "ListObjectsV2", bucket: ctx.bucket, key: prefix });
}
