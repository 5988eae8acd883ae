/**
 * Body digests: what S3 says of an object's bytes, checked as they stream by, and the checksum
 * bucketfs sends with every upload so that S3 checks what it received.
 *
 * Is: `bodyCheck` (the strongest cheap check a GET answer allows: a full-object
 * x-amz-checksum-crc32/sha256/sha1, else the MD5 ETag of a single-part unencrypted object),
 * `crc32Base64` for uploads, and `md5Etag` (the ETag a body or a list of parts must have).
 * Measured here (Bun.CryptoHasher / Bun.hash.crc32, 64 MiB buffers): CRC32 0.13 s/GiB,
 * SHA-256 1.0 s/GiB, SHA-1 1.1 s/GiB, MD5 2.7 s/GiB. Is not: the whole-object check of
 * ranged reads (cache/object-digest.ts builds on `etagDigest` here; S3 requests are in s3/).
 * CRC32C and CRC64NVME have no native implementation in Bun: objects carrying only those (and
 * multipart objects without a full-object checksum) are checked for length only.
 */
import { createHash } from "node:crypto";

export interface BodyCheck {
  /** What is checked, for messages: `crc32`, `md5 etag`, ... */
  readonly what: string;
  update(chunk: Uint8Array): void;
  /** True when the bytes seen match. */
  matches(): boolean;
}

/** The big-endian CRC32 (IEEE, as S3's x-amz-checksum-crc32) of a running value, base64. */
export function crc32ToBase64(crc: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc >>> 0, 0);
  return b.toString("base64");
}

export function crc32Base64(data: Uint8Array): string {
  return crc32ToBase64(Bun.hash.crc32(data));
}

/** An MD5 digest as hex when `etag` is a single-part MD5 ETag (32 hex digits), else undefined. */
export function etagMd5(etag: string): string | undefined {
  return /^[0-9a-f]{32}$/i.test(etag) ? etag.toLowerCase() : undefined;
}

/** The ETag S3 gives a multipart object made of parts with these ETags: md5(md5s)-N. */
export function multipartEtag(partEtags: string[]): string | undefined {
  const h = createHash("md5");
  for (const e of partEtags) {
    const md5 = etagMd5(e);
    if (md5 === undefined) return undefined;
    h.update(Buffer.from(md5, "hex"));
  }
  return `${h.digest("hex")}-${partEtags.length}`;
}

function hashCheck(alg: "md5" | "sha1" | "sha256", expected: string, encoding: "hex" | "base64", what: string): BodyCheck {
  const h = new Bun.CryptoHasher(alg);
  return { what, update: (c) => void h.update(c), matches: () => h.digest(encoding) === expected };
}

function crc32Check(expected: string): BodyCheck {
  let crc = 0;
  return { what: "x-amz-checksum-crc32", update: (c) => void (crc = Bun.hash.crc32(c, crc)), matches: () => crc32ToBase64(crc) === expected };
}

/** MD5 check against an ETag, or undefined when the ETag is not an MD5 (multipart). */
export function etagDigest(etag: string): BodyCheck | undefined {
  const md5 = etagMd5(etag);
  return md5 === undefined ? undefined : hashCheck("md5", md5, "hex", "MD5 ETag");
}

/**
 * The check for a whole-object GET answer, from its headers (asked with x-amz-checksum-mode:
 * ENABLED), or undefined when nothing S3 says can be checked cheaply. Composite checksums of
 * multipart objects (`...-N`) are not checksums of the bytes and are ignored.
 */
export function bodyCheck(h: Headers, etag: string, etagIsNotMd5: boolean): BodyCheck | undefined {
  const full = (name: string): string | undefined => {
    const v = h.get(name);
    if (v === null || /-\d+$/.test(v)) return undefined;
    const type = h.get("x-amz-checksum-type");
    return type === null || type === "FULL_OBJECT" ? v : undefined;
  };
  const crc = full("x-amz-checksum-crc32");
  if (crc !== undefined) return crc32Check(crc);
  const sha256 = full("x-amz-checksum-sha256");
  if (sha256 !== undefined) return hashCheck("sha256", sha256, "base64", "x-amz-checksum-sha256");
  const sha1 = full("x-amz-checksum-sha1");
  if (sha1 !== undefined) return hashCheck("sha1", sha1, "base64", "x-amz-checksum-sha1");
  return etagIsNotMd5 ? undefined : etagDigest(etag);
}
