/**
 * AWS Signature Version 4 for S3 requests (header form), on node:crypto.
 * https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
 *
 * Is: canonical request, string to sign, and the Authorization header; the signing key is
 * derived once per (secret, day, region). Bodies are sent as UNSIGNED-PAYLOAD: their integrity
 * comes from the checksum header S3 verifies (x-amz-checksum-crc32 / Content-MD5), which costs a
 * fraction of a payload SHA-256. Is not: a transport or a credential source.
 */
import { createHash, createHmac } from "node:crypto";
import type { Credentials } from "./credentials.ts";

export const UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD";

/** RFC 3986 encoding as SigV4 wants it: everything but A-Z a-z 0-9 - _ . ~ is %XX. */
export function uriEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** A path: each segment encoded, the "/" between them kept. */
export function uriEncodePath(path: string): string {
  return path.split("/").map(uriEncode).join("/");
}

let keyCache: { id: string; key: Buffer } | undefined;

function signingKey(secret: string, day: string, region: string): Buffer {
  const id = `${secret}\n${day}\n${region}`;
  if (keyCache?.id === id) return keyCache.key;
  const kDate = createHmac("sha256", `AWS4${secret}`).update(day).digest();
  const kRegion = createHmac("sha256", kDate).update(region).digest();
  const kService = createHmac("sha256", kRegion).update("s3").digest();
  const key = createHmac("sha256", kService).update("aws4_request").digest();
  keyCache = { id, key };
  return key;
}

/**
 * Adds x-amz-date, x-amz-content-sha256, x-amz-security-token and Authorization to `headers`
 * (lower-case names). `path` is already encoded; `query` entries are encoded here.
 */
export function signRequest(
  method: string,
  host: string,
  path: string,
  query: [string, string][],
  headers: Record<string, string>,
  creds: Credentials,
  region: string,
  now = new Date(),
): void {
  const iso = now.toISOString();
  const amzDate = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}T${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  const day = amzDate.slice(0, 8);
  headers["x-amz-date"] = amzDate;
  headers["x-amz-content-sha256"] ??= UNSIGNED_PAYLOAD;
  if (creds.sessionToken) headers["x-amz-security-token"] = creds.sessionToken;
  const signed: [string, string][] = [["host", host]];
  for (const [k, v] of Object.entries(headers)) {
    if (k.startsWith("x-amz-") || k === "content-md5" || k === "if-match" || k === "if-none-match" || k === "range") signed.push([k, v.trim()]);
  }
  signed.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const signedNames = signed.map((h) => h[0]).join(";");
  const canonicalQuery = query
    .map(([k, v]) => [uriEncode(k), uriEncode(v)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
  const canonical = `${method}\n${path}\n${canonicalQuery}\n${signed.map(([k, v]) => `${k}:${v}\n`).join("")}\n${signedNames}\n${headers["x-amz-content-sha256"]}`;
  const scope = `${day}/${region}/s3/aws4_request`;
  const toSign = `AWS4-HMAC-SHA256\n${amzDate}\n${scope}\n${createHash("sha256").update(canonical).digest("hex")}`;
  const signature = createHmac("sha256", signingKey(creds.secretAccessKey, day, region)).update(toSign).digest("hex");
  headers["authorization"] = `AWS4-HMAC-SHA256 Credential=${creds.accessKeyId}/${scope}, SignedHeaders=${signedNames}, Signature=${signature}`;
}
