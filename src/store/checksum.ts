/**
 * Body digests: what S3 says of an object's bytes, how to check bytes against it, and the
 * checksums bucketfs sends with its uploads so that S3 checks what it received.
 *
 * Is: the hashers (`newHasher`: MD5, SHA-1, SHA-256, CRC32, CRC32C, CRC64NVME, each fed in
 * order, digest as raw big-endian bytes as S3 encodes them), the choice of what to check an
 * object with (`chooseVerification`, in the order of docs/SEMANTICS.md: full-object checksum,
 * composite checksum per part, multipart ETag from per-part MD5s, single-part MD5 ETag,
 * nothing), `bodyCheck` for a whole-object GET answer, and the ETag/composite arithmetic
 * (`multipartEtag`, `compositeChecksum`, `crc64nvmeCombine`). Implementations, chosen by
 * measurement (docs/ARCHITECTURE.md "Checksums"): CRC32 from node:zlib, CRC32C and CRC64NVME
 * from the N-API binding of aws-crt (pinned; its .node file is required by a static path so
 * that `bun build --compile` embeds it; a TypeScript fallback where it does not load),
 * MD5/SHA from Bun.CryptoHasher. Is not: where the bytes
 * come from (s3/get.ts, cache/object-digest.ts) or the worker that hashes off the FUSE thread
 * (hashing.ts, hash-worker.ts).
 */
import { createHash } from "node:crypto";
import { crc32 as zlibCrc32 } from "node:zlib";

export type ChecksumAlgorithm = "crc32" | "crc32c" | "crc64nvme" | "sha1" | "sha256";
export type HashAlgorithm = ChecksumAlgorithm | "md5";

/** S3's checksum algorithms in the order bucketfs prefers them (cheapest to check first). */
export const CHECKSUM_ALGORITHMS: readonly ChecksumAlgorithm[] = ["crc32c", "crc32", "crc64nvme", "sha1", "sha256"];

/** The N-API binding of aws-crt, only its checksum functions (an internal interface: the version is pinned in package.json). */
interface CrtChecksums {
  checksums_crc32c(data: Uint8Array, previous: number | undefined): number;
  checksums_crc64nvme(data: Uint8Array, previous: DataView | undefined): DataView;
}

let crt: CrtChecksums | null | undefined;

/** The aws-crt binding, or null when it cannot load here (CRC32C and CRC64NVME then use the TypeScript fallback). */
export function crtBinding(): CrtChecksums | null {
  if (crt !== undefined) return crt;
  try {
    // Static paths, so that `bun build --compile` embeds the file (a computed path is not embedded).
    crt = (process.arch === "arm64"
      ? require("../../node_modules/aws-crt/dist/bin/linux-arm64-glibc/aws-crt-nodejs.node")
      : require("../../node_modules/aws-crt/dist/bin/linux-x64-glibc/aws-crt-nodejs.node")) as CrtChecksums;
  } catch {
    crt = null;
  }
  return crt;
}

export interface Hasher {
  readonly algorithm: HashAlgorithm;
  update(chunk: Uint8Array): void;
  /** The digest as raw bytes, big-endian as S3 encodes checksums (base64 of these bytes). */
  digest(): Uint8Array;
}

function be32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0);
  return b;
}

/** A hasher fed in order. */
export function newHasher(alg: HashAlgorithm): Hasher {
  switch (alg) {
    case "crc32": {
      let crc = 0;
      return { algorithm: alg, update: (c) => void (crc = zlibCrc32(c, crc)), digest: () => be32(crc) };
    }
    case "crc32c": {
      const b = crtBinding();
      if (!b) return portableHasher(alg);
      let crc: number | undefined;
      return { algorithm: alg, update: (c) => void (crc = b.checksums_crc32c(c, crc)), digest: () => be32(crc ?? 0) };
    }
    case "crc64nvme": {
      const b = crtBinding();
      if (!b) return portableHasher(alg);
      let crc: DataView | undefined;
      return {
        algorithm: alg,
        update: (c) => void (crc = b.checksums_crc64nvme(c, crc)),
        digest: () => (crc ? new Uint8Array(crc.buffer.slice(crc.byteOffset, crc.byteOffset + 8)) : new Uint8Array(8)),
      };
    }
    default: {
      const h = new Bun.CryptoHasher(alg);
      return { algorithm: alg, update: (c) => void h.update(c), digest: () => new Uint8Array(h.digest()) };
    }
  }
}

/** CRC-64/NVME, reflected polynomial (x^64 + ... as S3 and NVMe define it). */
const CRC64NVME_POLY = 0x9a6c9329ac4bc9b5n;
const TOP64 = 1n << 63n;

/** a * b modulo the CRC64NVME polynomial, both reflected (bit 63 is x^0). */
function mulModP64(a: bigint, b: bigint): bigint {
  let m = TOP64;
  let p = 0n;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1n)) === 0n) break;
    }
    m >>= 1n;
    b = b & 1n ? (b >> 1n) ^ CRC64NVME_POLY : b >> 1n;
  }
  return p;
}

/** x^(2^k) modulo the polynomial, for k = 0..63. */
let x2n64: bigint[] | undefined;

/**
 * The CRC64NVME of A||B from crc(A), crc(B) and B's length: how a multipart upload's parts,
 * hashed in any order, give the full-object checksum without a second pass over the file
 * (the zlib crc32_combine method, in 64 bits).
 */
export function crc64nvmeCombine(crcA: Uint8Array, crcB: Uint8Array, lenB: number): Uint8Array {
  if (x2n64 === undefined) {
    x2n64 = [1n << 62n];
    for (let k = 1; k < 64; k++) x2n64.push(mulModP64(x2n64[k - 1]!, x2n64[k - 1]!));
  }
  const a = new DataView(crcA.buffer, crcA.byteOffset, 8).getBigUint64(0);
  const b = new DataView(crcB.buffer, crcB.byteOffset, 8).getBigUint64(0);
  // x^(8 * lenB) mod P
  let p = TOP64;
  let n = BigInt(lenB);
  for (let k = 3; n > 0n; n >>= 1n, k++) if (n & 1n) p = mulModP64(x2n64[k & 63]!, p);
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, mulModP64(p, a) ^ b);
  return out;
}

/** The CRC64NVME of consecutive pieces from each piece's CRC (raw) and length, joined in order with crc64nvmeCombine. */
export function crc64nvmeJoin(pieces: readonly { crc: Uint8Array; bytes: number }[]): Uint8Array {
  let whole = pieces[0]!.crc;
  for (const p of pieces.slice(1)) whole = crc64nvmeCombine(whole, p.crc, p.bytes);
  return whole;
}

// Portable CRC32C and CRC64NVME (table-driven, slicing by 8), used only where the aws-crt
// binding does not load (musl, other CPUs): 1.8 s/GiB for CRC64NVME here, against 0.64.
let c32c: Uint32Array | undefined;
let c64lo: Uint32Array | undefined;
let c64hi: Uint32Array | undefined;

function tables(): void {
  if (c32c) return;
  c32c = new Uint32Array(8 * 256);
  c64lo = new Uint32Array(8 * 256);
  c64hi = new Uint32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    c32c[i] = c >>> 0;
    let lo = i;
    let hi = 0;
    for (let k = 0; k < 8; k++) {
      const m = lo & 1;
      lo = ((lo >>> 1) | (hi << 31)) >>> 0;
      hi >>>= 1;
      if (m) {
        lo = (lo ^ 0xac4bc9b5) >>> 0;
        hi = (hi ^ 0x9a6c9329) >>> 0;
      }
    }
    c64lo[i] = lo;
    c64hi[i] = hi;
  }
  for (let t = 1; t < 8; t++) {
    for (let i = 0; i < 256; i++) {
      const p = c32c[(t - 1) * 256 + i]!;
      c32c[t * 256 + i] = (p >>> 8) ^ c32c[p & 0xff]!;
      const plo = c64lo[(t - 1) * 256 + i]!;
      const phi = c64hi[(t - 1) * 256 + i]!;
      const j = plo & 0xff;
      c64lo[t * 256 + i] = (((plo >>> 8) | (phi << 24)) ^ c64lo[j]!) >>> 0;
      c64hi[t * 256 + i] = ((phi >>> 8) ^ c64hi[j]!) >>> 0;
    }
  }
}

/** CRC32C or CRC64NVME in TypeScript (the fallback of newHasher; exported for its test). */
export function portableHasher(alg: "crc32c" | "crc64nvme"): Hasher {
  tables();
  const T = c32c!;
  const L = c64lo!;
  const H = c64hi!;
  let c = 0xffffffff;
  let lo = 0xffffffff;
  let hi = 0xffffffff;
  const update32 = (d: Uint8Array) => {
    const v = new DataView(d.buffer, d.byteOffset, d.byteLength);
    let i = 0;
    for (; i + 8 <= d.length; i += 8) {
      const a = (c ^ v.getUint32(i, true)) >>> 0;
      const b = v.getUint32(i + 4, true);
      c = T[1792 + (a & 0xff)]! ^ T[1536 + ((a >>> 8) & 0xff)]! ^ T[1280 + ((a >>> 16) & 0xff)]! ^ T[1024 + (a >>> 24)]! ^
        T[768 + (b & 0xff)]! ^ T[512 + ((b >>> 8) & 0xff)]! ^ T[256 + ((b >>> 16) & 0xff)]! ^ T[b >>> 24]!;
    }
    for (; i < d.length; i++) c = (c >>> 8) ^ T[(c ^ d[i]!) & 0xff]!;
  };
  const update64 = (d: Uint8Array) => {
    const v = new DataView(d.buffer, d.byteOffset, d.byteLength);
    let i = 0;
    for (; i + 8 <= d.length; i += 8) {
      const a = (lo ^ v.getUint32(i, true)) >>> 0;
      const b = (hi ^ v.getUint32(i + 4, true)) >>> 0;
      const a0 = a & 0xff, a1 = (a >>> 8) & 0xff, a2 = (a >>> 16) & 0xff, a3 = a >>> 24;
      const b0 = b & 0xff, b1 = (b >>> 8) & 0xff, b2 = (b >>> 16) & 0xff, b3 = b >>> 24;
      lo = (L[1792 + a0]! ^ L[1536 + a1]! ^ L[1280 + a2]! ^ L[1024 + a3]! ^ L[768 + b0]! ^ L[512 + b1]! ^ L[256 + b2]! ^ L[b3]!) >>> 0;
      hi = (H[1792 + a0]! ^ H[1536 + a1]! ^ H[1280 + a2]! ^ H[1024 + a3]! ^ H[768 + b0]! ^ H[512 + b1]! ^ H[256 + b2]! ^ H[b3]!) >>> 0;
    }
    for (; i < d.length; i++) {
      const j = (lo ^ d[i]!) & 0xff;
      lo = (((lo >>> 8) | (hi << 24)) ^ L[j]!) >>> 0;
      hi = ((hi >>> 8) ^ H[j]!) >>> 0;
    }
  };
  if (alg === "crc32c") return { algorithm: alg, update: update32, digest: () => be32(~c) };
  return {
    algorithm: alg,
    update: update64,
    digest: () => {
      const out = new Uint8Array(8);
      const v = new DataView(out.buffer);
      v.setUint32(0, ~hi >>> 0);
      v.setUint32(4, ~lo >>> 0);
      return out;
    },
  };
}

export function toBase64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64");
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

/** The big-endian CRC32 (IEEE, as S3's x-amz-checksum-crc32) of `data`, base64. */
export function crc32Base64(data: Uint8Array): string {
  return toBase64(be32(zlibCrc32(data)));
}

/** An MD5 digest as hex when `etag` is a single-part MD5 ETag (32 hex digits), else undefined. */
export function etagMd5(etag: string): string | undefined {
  return /^[0-9a-f]{32}$/i.test(etag) ? etag.toLowerCase() : undefined;
}

/** `md5hex-N`: the ETag of a multipart upload of N parts; undefined for any other ETag. */
export function multipartEtagParts(etag: string): number | undefined {
  const m = /^[0-9a-f]{32}-(\d+)$/i.exec(etag);
  return m ? Number(m[1]) : undefined;
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

/** The multipart ETag of parts with these raw MD5 digests. */
export function multipartEtagOfDigests(md5s: Uint8Array[]): string {
  const h = createHash("md5");
  for (const d of md5s) h.update(d);
  return `${h.digest("hex")}-${md5s.length}`;
}

/** A composite checksum: the checksum of the parts' raw checksums, `<base64>-N`. */
export function compositeChecksum(alg: ChecksumAlgorithm, parts: Uint8Array[]): string {
  const h = newHasher(alg);
  for (const p of parts) h.update(p);
  return `${toBase64(h.digest())}-${parts.length}`;
}

/** A checksum S3 holds for an object (from HEAD/GET with x-amz-checksum-mode: ENABLED). */
export interface ObjectChecksum {
  algorithm: ChecksumAlgorithm;
  /** base64 of the raw checksum; for COMPOSITE without the `-N` suffix. */
  value: string;
  type: "FULL_OBJECT" | "COMPOSITE";
  /** COMPOSITE: the N of `-N`. */
  parts?: number;
}

/** The first x-amz-checksum-* header of an answer, in preference order; undefined when none. */
export function checksumFromHeaders(h: Headers): ObjectChecksum | undefined {
  const type = h.get("x-amz-checksum-type");
  for (const alg of CHECKSUM_ALGORITHMS) {
    const v = h.get(`x-amz-checksum-${alg}`);
    if (v === null || v === "") continue;
    const m = /^(.*)-(\d+)$/.exec(v);
    if (m) return { algorithm: alg, value: m[1]!, type: "COMPOSITE", parts: Number(m[2]) };
    return { algorithm: alg, value: v, type: type === "COMPOSITE" ? "COMPOSITE" : "FULL_OBJECT" };
  }
  return undefined;
}

/**
 * A part's own checksum of `alg` in an answer to GET or HEAD partNumber=N (base64), or
 * undefined. A value with `-N` is the object's composite checksum, not the part's.
 */
export function partChecksumFromHeaders(h: Headers, alg: ChecksumAlgorithm): string | undefined {
  const v = h.get(`x-amz-checksum-${alg}`);
  return v !== null && v !== "" && !/-\d+$/.test(v) ? v : undefined;
}

/** What S3 holds about an object's bytes (ObjectStore.integrity). */
export interface ObjectIntegrity {
  etag: string;
  size: number;
  checksum?: ObjectChecksum;
  /**
   * Multipart objects: the number of parts and the size of part 1 (HEAD partNumber=1), and the
   * size of every part when they are not all that size (the last one shorter).
   */
  parts?: {
    count: number; size: number; sizes?: number[];
    /** Part 1's own checksum of the object's composite algorithm, from that HEAD, when S3 gave it. */
    checksum1?: string;
  };
  /** SSE-KMS/SSE-C: the ETag is not the MD5 of the bytes. */
  etagNotMd5?: boolean;
}

/** How an object's bytes are checked; `none` only counts and logs (length checked alone). */
export type Verification =
  | { kind: "full"; algorithm: ChecksumAlgorithm; value: string }
  /** `bounds`: part n (1-based) is bytes [bounds[n-1], bounds[n]). */
  | { kind: "composite"; algorithm: ChecksumAlgorithm; value: string; count: number; bounds: number[] }
  | { kind: "multipart-etag"; etag: string; count: number; bounds: number[] }
  | { kind: "md5"; md5: string }
  | { kind: "none"; reason: string };

/** Words for messages and status: what an object is checked against. */
export function describeVerification(v: Verification): string {
  switch (v.kind) {
    case "full": return `full-object ${v.algorithm}`;
    case "composite": return `composite ${v.algorithm} of ${v.count} parts`;
    case "multipart-etag": return `multipart ETag of ${v.count} parts`;
    case "md5": return "MD5 ETag";
    case "none": return `nothing (${v.reason})`;
  }
}

/** The strongest cheap check S3 allows for this object, in the order the module header gives. */
export function chooseVerification(i: ObjectIntegrity): Verification {
  const c = i.checksum;
  if (c && c.type === "FULL_OBJECT") return { kind: "full", algorithm: c.algorithm, value: c.value };
  const mpParts = multipartEtagParts(i.etag);
  const bounds = i.parts ? partBounds(i.parts, i.size) : undefined;
  if (c && c.type === "COMPOSITE" && i.parts && bounds) {
    return { kind: "composite", algorithm: c.algorithm, value: c.value, count: i.parts.count, bounds };
  }
  if (mpParts !== undefined && i.parts && bounds && i.parts.count === mpParts && !i.etagNotMd5) {
    return { kind: "multipart-etag", etag: i.etag.toLowerCase(), count: i.parts.count, bounds };
  }
  const md5 = etagMd5(i.etag);
  if (md5 !== undefined && !i.etagNotMd5) return { kind: "md5", md5 };
  if (i.etagNotMd5) return { kind: "none", reason: "encrypted (SSE-KMS or SSE-C) without a checksum" };
  return { kind: "none", reason: `ETag ${i.etag} is neither an MD5 nor a multipart ETag S3 gave the parts of` };
}

/** The offsets where parts start, and `size` last; undefined when the parts cannot make `size` bytes. */
export function partBounds(parts: { count: number; size: number; sizes?: number[] }, size: number): number[] | undefined {
  const sizes = parts.sizes ?? (uniformParts(parts.count, parts.size, size)
    ? Array.from({ length: parts.count }, (_, k) => (k === parts.count - 1 ? size - k * parts.size : parts.size))
    : undefined);
  if (!sizes || sizes.length !== parts.count) return undefined;
  const out = [0];
  for (const s of sizes) out.push(out[out.length - 1]! + s);
  return out[out.length - 1] === size ? out : undefined;
}

/** True when `count` parts of `partSize` (the last one shorter, not empty) make `size` bytes. */
export function uniformParts(count: number, partSize: number, size: number): boolean {
  return count >= 1 && partSize > 0 && (count - 1) * partSize < size && size <= count * partSize;
}

export interface BodyCheck {
  /** What is checked, for messages: `crc32`, `md5 etag`, ... */
  readonly what: string;
  update(chunk: Uint8Array): void;
  /** True when the bytes seen match. */
  matches(): boolean;
}

function hasherCheck(alg: HashAlgorithm, expected: string, encoding: "hex" | "base64", what: string): BodyCheck {
  const h = newHasher(alg);
  return { what, update: (c) => h.update(c), matches: () => (encoding === "hex" ? toHex(h.digest()) : toBase64(h.digest())) === expected };
}

/** The check of a whole body for a `full` or `md5` verification; undefined for the others. */
export function wholeBodyCheck(v: Verification): BodyCheck | undefined {
  if (v.kind === "full") return hasherCheck(v.algorithm, v.value, "base64", `x-amz-checksum-${v.algorithm}`);
  if (v.kind === "md5") return hasherCheck("md5", v.md5, "hex", "MD5 ETag");
  return undefined;
}

/**
 * The check for a whole-object GET answer, from its headers (asked with x-amz-checksum-mode:
 * ENABLED), or undefined when nothing in the answer alone can check the body (composite
 * checksums and multipart ETags need the parts: s3/get.ts fetches those part by part).
 */
export function bodyCheck(h: Headers, etag: string, etagIsNotMd5: boolean): BodyCheck | undefined {
  const checksum = checksumFromHeaders(h);
  const v = chooseVerification({ etag, size: 0, ...(checksum ? { checksum } : {}), etagNotMd5: etagIsNotMd5 });
  return wholeBodyCheck(v);
}
