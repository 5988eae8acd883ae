/**
 * Pure parts of the S3 store: the SigV4 signer (AWS's published example), the one retry rule,
 * error mapping, url-decoding of listed keys, and the checksums. The requests themselves are
 * tested against MinIO (test/integration/store.test.ts, faults.test.ts).
 */
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { signRequest } from "../../src/store/s3/sign.ts";
import { isRetryable, s3Error, toStoreError } from "../../src/store/s3/errors.ts";
import { decodeKey } from "../../src/store/s3/list.ts";
import { bodyCheck, crc32Base64, multipartEtag } from "../../src/store/checksum.ts";
import { StoreError } from "../../src/store/types.ts";

const where = { op: "GetObject", bucket: "b", key: "k" };

describe("SigV4", () => {
  test("AWS's GET Object example signs to the published signature", () => {
    // https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html (Example: GET Object)
    const headers: Record<string, string> = {
      range: "bytes=0-9",
      "x-amz-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    };
    signRequest("GET", "examplebucket.s3.amazonaws.com", "/test.txt", [], headers,
      { accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" }, "us-east-1",
      new Date("2013-05-24T00:00:00Z"));
    expect(headers.authorization).toBe(
      "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, " +
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, " +
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    );
  });

  test("session tokens are signed; bodies are UNSIGNED-PAYLOAD by default", () => {
    const headers: Record<string, string> = {};
    signRequest("PUT", "h", "/b/k", [["partNumber", "1"]], headers, { accessKeyId: "a", secretAccessKey: "s", sessionToken: "tok" }, "eu-west-1");
    expect(headers["x-amz-security-token"]).toBe("tok");
    expect(headers["x-amz-content-sha256"]).toBe("UNSIGNED-PAYLOAD");
    expect(headers.authorization).toContain("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,");
  });
});

describe("the one retry rule", () => {
  test.each([
    ["503 SlowDown", s3Error(where, 503, "<Error><Code>SlowDown</Code></Error>"), true, "throttled"],
    ["500 InternalError", s3Error(where, 500, "<Error><Code>InternalError</Code></Error>"), true, "other"],
    ["400 RequestTimeout", s3Error(where, 400, "<Error><Code>RequestTimeout</Code></Error>"), true, "other"],
    ["400 BadDigest", s3Error(where, 400, "<Error><Code>BadDigest</Code></Error>"), true, "other"],
    ["400 XAmzContentSHA256Mismatch", s3Error(where, 400, "<Error><Code>XAmzContentSHA256Mismatch</Code></Error>"), true, "other"],
    ["400 ExpiredToken", s3Error(where, 400, "<Error><Code>ExpiredToken</Code></Error>"), true, "access-denied"],
    ["404 NoSuchKey", s3Error(where, 404, "<Error><Code>NoSuchKey</Code></Error>"), false, "not-found"],
    ["404 NoSuchBucket", s3Error(where, 404, "<Error><Code>NoSuchBucket</Code></Error>"), false, "no-such-bucket"],
    ["403 HEAD (no body)", s3Error(where, 403, ""), false, "access-denied"],
    ["412", s3Error(where, 412, ""), false, "precondition"],
    ["ECONNRESET", toStoreError(Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }), where), true, "network"],
    ["socket closed", toStoreError(new Error("The socket connection was closed unexpectedly"), where), true, "network"],
    ["TimeoutError", toStoreError(Object.assign(new Error("t"), { name: "TimeoutError" }), where), true, "network"],
    ["AbortError", toStoreError(new DOMException("aborted", "AbortError"), where), false, "aborted"],
    ["digest mismatch", new StoreError("corrupt", "x"), true, "corrupt"],
    ["unknown", toStoreError(new Error("something else"), where), false, "other"],
  ] as const)("%s", (_l, e, retry, kind) => {
    expect(e.kind).toBe(kind);
    expect(isRetryable(e)).toBe(retry);
  });

  test("errors carry op, bucket, key and code; messages never carry signed URLs", () => {
    const e = s3Error({ op: "ListObjectsV2", bucket: "bkt", key: "data/" }, 503, "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>");
    expect(e).toMatchObject({ op: "ListObjectsV2", bucket: "bkt", key: "data/", code: "SlowDown", status: 503 });
    expect(e.message).toBe("[s3] ListObjectsV2 bkt/data/: 503 SlowDown: Please reduce your request rate.");
    const u = toStoreError(new Error("failed https://h/x?X-Amz-Credential=AKIAXXXX&X-Amz-Signature=abcdef"), where);
    expect(u.message).not.toContain("AKIAXXXX");
    expect(u.message).not.toContain("abcdef");
    const ac = new AbortController();
    ac.abort(new Error("custom reason"));
    expect(toStoreError(new Error("custom reason"), where, true).kind).toBe("aborted");
  });
});

describe("listed keys", () => {
  test("url-decoded the way S3 encodes them (+ is a space), undecodable ones are undefined", () => {
    expect(decodeKey("a+b%2Bc")).toBe("a b+c");
    expect(decodeKey("ctl%01key")).toBe("ctl\x01key");
    expect(decodeKey("%C3%A9t%C3%A9")).toBe("été");
    expect(decodeKey("bad%ZZ")).toBeUndefined();
    expect(decodeKey("notutf8%FF")).toBeUndefined();
  });
});

describe("checksums", () => {
  const body = new TextEncoder().encode("hello world");
  test("CRC32 as S3 writes it (base64 of the big-endian value)", () => {
    expect(crc32Base64(body)).toBe("DUoRhQ==");
  });
  test("a body check prefers a full-object checksum, ignores composite ones, else uses an MD5 ETag", () => {
    const md5 = createHash("md5").update(body).digest("hex");
    const c1 = bodyCheck(new Headers({ "x-amz-checksum-crc32": "DUoRhQ==" }), md5, false)!;
    expect(c1.what).toBe("x-amz-checksum-crc32");
    c1.update(body);
    expect(c1.matches()).toBe(true);
    const c2 = bodyCheck(new Headers({ "x-amz-checksum-crc32": "AAAAAA==-3" }), md5, false)!;
    expect(c2.what).toBe("MD5 ETag");
    c2.update(body.subarray(0, 5));
    c2.update(body.subarray(5));
    expect(c2.matches()).toBe(true);
    const flipped = new Uint8Array(body);
    flipped[3]! ^= 1;
    const c3 = bodyCheck(new Headers(), md5, false)!;
    c3.update(flipped);
    expect(c3.matches()).toBe(false);
    expect(bodyCheck(new Headers(), `${md5}-2`, false)).toBeUndefined();
    expect(bodyCheck(new Headers(), md5, true)).toBeUndefined();
  });
  test("multipart ETag is md5 of the part md5s, -N", () => {
    const a = createHash("md5").update("a").digest("hex");
    const b = createHash("md5").update("b").digest("hex");
    const expected = createHash("md5").update(Buffer.concat([Buffer.from(a, "hex"), Buffer.from(b, "hex")])).digest("hex") + "-2";
    expect(multipartEtag([a, b])).toBe(expected);
    expect(multipartEtag([a, "not-md5"])).toBeUndefined();
  });
});
