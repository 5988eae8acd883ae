/**
 * Pure parts of the request path's network policy: the credential cache (refresh windows for
 * short-lived identities, a refresh that fails or hangs keeps the old identity until it
 * expires, one fetch at a time), HTTPS_PROXY/NO_PROXY matching, the error answer of a redirect
 * naming the region, and malformed answers counted as network failures (retried). A fake
 * provider and clock stand in for the AWS chain; the requests themselves are tested against
 * MinIO behind the fault proxy (test/integration/network.test.ts).
 */
import { describe, expect, test } from "bun:test";
import { credentialSource, type Provider } from "../../src/store/s3/credentials.ts";
import { proxyFor } from "../../src/store/s3/request.ts";
import { isRetryable, s3Error, toStoreError } from "../../src/store/s3/errors.ts";

const where = { op: "GetObject", bucket: "b", key: "k" };

function fakeChain(lifetimeMs: number) {
  let clock = 1_000_000;
  let calls = 0;
  let mode: "ok" | "fail" | "hang" = "ok";
  const provider: Provider = async () => {
    calls++;
    if (mode === "fail") throw new Error("helper exited 1");
    if (mode === "hang") return new Promise(() => {});
    return { accessKeyId: `AK${calls}`, secretAccessKey: "s", expiration: new Date(clock + lifetimeMs) };
  };
  return {
    provider, now: () => clock,
    advance: (ms: number) => (clock += ms),
    get calls() {
      return calls;
    },
    set mode(m: "ok" | "fail" | "hang") {
      mode = m;
    },
  };
}

const settle = () => new Promise((r) => setTimeout(r, 5));

describe("credential cache", () => {
  test("a 2-minute identity: one fetch per refresh window however many requests", async () => {
    const f = fakeChain(120_000);
    const src = credentialSource(undefined, undefined, { provider: f.provider, now: f.now });
    // 1 request per second for 5 minutes.
    const keys = new Set<string>();
    for (let s = 0; s < 300; s++) {
      keys.add((await src.get()).accessKeyId);
      await settle();
      f.advance(1_000);
    }
    // Refreshed half-way through each identity's life: every 60 s.
    expect(f.calls).toBeGreaterThanOrEqual(5);
    expect(f.calls).toBeLessThanOrEqual(6);
    expect(keys.size).toBe(f.calls);
    expect(src.state()).toMatchObject({ kind: "default chain", fetches: f.calls, refreshError: null });
  });

  test("a failed refresh keeps the old identity until it expires, says so, and retries after a pause", async () => {
    const f = fakeChain(120_000);
    const src = credentialSource(undefined, undefined, { provider: f.provider, now: f.now });
    expect((await src.get()).accessKeyId).toBe("AK1");
    f.mode = "fail";
    f.advance(61_000); // refresh window
    expect((await src.get()).accessKeyId).toBe("AK1");
    await settle();
    expect(f.calls).toBe(2);
    expect(src.state().refreshError).toContain("helper exited 1");
    // No new attempt on every request: the next one waits a pause.
    for (let i = 0; i < 20; i++) await src.get();
    await settle();
    expect(f.calls).toBe(2);
    f.mode = "ok";
    f.advance(30_000);
    expect((await src.get()).accessKeyId).toBe("AK1"); // still valid; a refresh starts
    await settle();
    expect(f.calls).toBe(3);
    expect((await src.get()).accessKeyId).toBe("AK3");
    expect(src.state().refreshError).toBeNull();
  });

  test("a hanging refresh never blocks requests while the identity is valid; once expired, the fetch times out", async () => {
    const f = fakeChain(120_000);
    const src = credentialSource(undefined, undefined, { provider: f.provider, now: f.now, fetchTimeoutMs: 50 });
    await src.get();
    f.mode = "hang";
    f.advance(70_000);
    const t0 = Date.now();
    expect((await src.get()).accessKeyId).toBe("AK1");
    expect(Date.now() - t0).toBeLessThan(20);
    await new Promise((r) => setTimeout(r, 80)); // the hung refresh timed out
    expect(src.state().refreshError).toContain("no answer");
    f.advance(60_000); // expired now
    await expect(src.get()).rejects.toMatchObject({ kind: "access-denied", code: "CredentialsProviderError" });
  });

  test("an abort ends a wait for a fetch", async () => {
    const f = fakeChain(120_000);
    f.mode = "hang";
    const src = credentialSource(undefined, undefined, { provider: f.provider, now: f.now, fetchTimeoutMs: 10_000 });
    const ac = new AbortController();
    const p = src.get(ac.signal);
    ac.abort(new Error("second SIGINT"));
    await expect(p).rejects.toThrow("second SIGINT");
  });
});

describe("HTTPS_PROXY / NO_PROXY", () => {
  const env = { HTTPS_PROXY: "http://proxy.site:3128", HTTP_PROXY: "http://plain:8080", NO_PROXY: "localhost,.internal,10.1.2.3,minio:9000" };
  test("https origins use HTTPS_PROXY, http ones HTTP_PROXY", () => {
    expect(proxyFor("https://s3.us-east-1.amazonaws.com", env)).toBe("http://proxy.site:3128");
    expect(proxyFor("http://s3.example.org", env)).toBe("http://plain:8080");
    expect(proxyFor("https://x.example.org", { https_proxy: "http://lower:1" })).toBe("http://lower:1");
  });
  test("NO_PROXY: names, suffixes, addresses, ports, *", () => {
    expect(proxyFor("http://localhost:9000", env)).toBeUndefined();
    expect(proxyFor("https://s3.internal", env)).toBeUndefined();
    expect(proxyFor("https://a.b.internal", env)).toBeUndefined();
    expect(proxyFor("http://10.1.2.3:9000", env)).toBeUndefined();
    expect(proxyFor("http://minio:9000", env)).toBeUndefined();
    expect(proxyFor("http://minio:9001", env)).toBe("http://plain:8080");
    expect(proxyFor("https://internalx.org", env)).toBe("http://proxy.site:3128");
    expect(proxyFor("https://anything", { HTTPS_PROXY: "http://p:1", NO_PROXY: "*" })).toBeUndefined();
    expect(proxyFor("https://anything", {})).toBeUndefined();
  });
});

describe("error answers", () => {
  test("a redirect names the region the bucket is in", () => {
    const h = new Headers({ "x-amz-bucket-region": "eu-central-1" });
    const e = s3Error(where, 301, "", h);
    expect(e.code).toBe("PermanentRedirect");
    expect(e.message).toContain("region eu-central-1");
    const body = "<Error><Code>PermanentRedirect</Code><Message>use the endpoint</Message><Endpoint>b.s3.eu-west-2.amazonaws.com</Endpoint></Error>";
    expect(s3Error(where, 301, body).message).toContain("b.s3.eu-west-2.amazonaws.com");
  });

  test("malformed answers are network failures, retried like a reset; a skewed clock is not retried", () => {
    const bad = toStoreError(Object.assign(new Error("bad status line"), { code: "EPROTO" }), where);
    expect(bad.kind).toBe("network");
    expect(isRetryable(bad)).toBe(true);
    const skew = s3Error(where, 403, "<Error><Code>RequestTimeTooSkewed</Code></Error>");
    expect(skew.kind).toBe("access-denied");
    expect(isRetryable(skew)).toBe(false);
  });
});
