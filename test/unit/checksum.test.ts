/**
 * The checksums against their published check values ("123456789"), fed whole and in pieces,
 * and the choice of what checks an object (store/checksum.ts), including the arithmetic of
 * composite checksums and multipart ETags.
 */
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import {
  checksumFromHeaders, chooseVerification, compositeChecksum, crc64nvmeCombine, crtBinding, multipartEtag, multipartEtagOfDigests, newHasher,
  partBounds, portableHasher, toBase64, toHex, type HashAlgorithm,
} from "../../src/store/checksum.ts";

const CHECK = new TextEncoder().encode("123456789");

describe("published check values of 123456789", () => {
  const vectors: [HashAlgorithm, string][] = [
    ["crc32", "cbf43926"],
    ["crc32c", "e3069283"],
    ["crc64nvme", "ae8b14860a799888"],
    ["md5", "25f9e794323b453885f5181f1b624d0b"],
    ["sha1", "f7c3bc1d808e04732adf679965ccc34ca7ae3441"],
    ["sha256", "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225"],
  ];
  for (const [alg, want] of vectors) {
    test(`${alg}: ${want}, whole and fed in pieces`, () => {
      const h = newHasher(alg);
      h.update(CHECK);
      expect(toHex(h.digest())).toBe(want);
      const p = newHasher(alg);
      p.update(CHECK.subarray(0, 1));
      p.update(CHECK.subarray(1, 5));
      p.update(CHECK.subarray(5));
      expect(toHex(p.digest())).toBe(want);
    });
  }

  test("the aws-crt binding loads under Bun", () => {
    expect(crtBinding()).not.toBeNull();
  });
});

describe("what checks an object", () => {
  const md5 = createHash("md5").update("x").digest("hex");
  test("a full-object checksum first, then composite, multipart ETag, MD5 ETag, nothing", () => {
    const full = checksumFromHeaders(new Headers({ "x-amz-checksum-crc64nvme": "rosUhgp5mIg=", "x-amz-checksum-type": "FULL_OBJECT" }))!;
    expect(chooseVerification({ etag: md5, size: 9, checksum: full })).toEqual({ kind: "full", algorithm: "crc64nvme", value: "rosUhgp5mIg=" });
    const comp = checksumFromHeaders(new Headers({ "x-amz-checksum-crc32": "TiUEcA==-3", "x-amz-checksum-type": "COMPOSITE" }))!;
    expect(comp).toEqual({ algorithm: "crc32", value: "TiUEcA==", type: "COMPOSITE", parts: 3 });
    const mp = `${md5}-3`;
    const parts = { count: 3, size: 5 };
    expect(chooseVerification({ etag: mp, size: 11, checksum: comp, parts })).toEqual({
      kind: "composite", algorithm: "crc32", value: "TiUEcA==", count: 3, bounds: [0, 5, 10, 11],
    });
    // Composite without the parts: nothing to fetch them by; the ETag cannot help either.
    expect(chooseVerification({ etag: mp, size: 11, checksum: comp }).kind).toBe("none");
    expect(chooseVerification({ etag: mp, size: 11, parts })).toEqual({ kind: "multipart-etag", etag: mp, count: 3, bounds: [0, 5, 10, 11] });
    expect(chooseVerification({ etag: md5, size: 1 })).toEqual({ kind: "md5", md5 });
    expect(chooseVerification({ etag: md5, size: 1, etagNotMd5: true }).kind).toBe("none");
    // A multipart ETag whose parts cannot make the size: not checked by a wrong layout.
    expect(chooseVerification({ etag: mp, size: 30, parts }).kind).toBe("none");
    expect(chooseVerification({ etag: mp, size: 13, parts: { count: 3, size: 5, sizes: [5, 3, 5] } })).toMatchObject({ bounds: [0, 5, 8, 13] });
  });

  test("part bounds: uniform parts with a shorter last one, or the sizes learned per part", () => {
    expect(partBounds({ count: 2, size: 4 }, 8)).toEqual([0, 4, 8]);
    expect(partBounds({ count: 2, size: 4 }, 9)).toBeUndefined();
    expect(partBounds({ count: 2, size: 4, sizes: [4, 6] }, 10)).toEqual([0, 4, 10]);
    expect(partBounds({ count: 2, size: 4, sizes: [4, 6] }, 11)).toBeUndefined();
  });

  test("composite checksum: the checksum of the parts' checksums, -N; multipart ETag: MD5 of the part MD5s", () => {
    const a = new Uint8Array(100).fill(1);
    const b = new Uint8Array(50).fill(2);
    const sum = (d: Uint8Array) => {
      const h = newHasher("crc32c");
      h.update(d);
      return h.digest();
    };
    const both = new Uint8Array([...sum(a), ...sum(b)]);
    const h = newHasher("crc32c");
    h.update(both);
    expect(compositeChecksum("crc32c", [sum(a), sum(b)])).toBe(`${toBase64(h.digest())}-2`);
    const ma = createHash("md5").update(a).digest();
    const mb = createHash("md5").update(b).digest();
    expect(multipartEtagOfDigests([ma, mb])).toBe(multipartEtag([ma.toString("hex"), mb.toString("hex")])!);
  });
});

describe("CRC64NVME of parts combined", () => {
  test("combine(crc(A), crc(B), |B|) is crc(A||B), at every split, empty parts included", () => {
    const data = new Uint8Array(3000).map((_, i) => (i * 31 + (i >> 5)) & 0xff);
    const crc = (d: Uint8Array) => {
      const h = newHasher("crc64nvme");
      h.update(d);
      return h.digest();
    };
    const whole = toHex(crc(data));
    for (const cut of [0, 1, 7, 8, 9, 1000, 2999, 3000]) {
      expect(toHex(crc64nvmeCombine(crc(data.subarray(0, cut)), crc(data.subarray(cut)), data.length - cut))).toBe(whole);
    }
    // Three parts, folded left to right as a multipart upload does.
    const parts = [data.subarray(0, 1024), data.subarray(1024, 2048), data.subarray(2048)];
    let acc = crc(parts[0]!);
    for (const p of parts.slice(1)) acc = crc64nvmeCombine(acc, crc(p), p.length);
    expect(toHex(acc)).toBe(whole);
  });
});

describe("the TypeScript fallback of CRC32C and CRC64NVME (where aws-crt does not load)", () => {
  test("published check values, and the same CRCs as aws-crt on 1 MiB + 13 bytes fed in odd pieces", () => {
    for (const [alg, want] of [["crc32c", "e3069283"], ["crc64nvme", "ae8b14860a799888"]] as const) {
      const h = portableHasher(alg);
      h.update(CHECK);
      expect(toHex(h.digest())).toBe(want);
      const data = new Uint8Array((1 << 20) + 13).map((_, i) => (i * 131 + (i >> 7)) & 0xff);
      const p = portableHasher(alg);
      for (let off = 0; off < data.length; off += 100_003) p.update(data.subarray(off, off + 100_003));
      const n = newHasher(alg);
      n.update(data);
      expect(toHex(p.digest())).toBe(toHex(n.digest()));
    }
  });
});
