import { describe, expect, test } from "bun:test";
import { LeaseHeldError, WorkdirLease, fenceMarginMs, leaseKey, parseLease, type LeaseStore } from "../../src/service/workdir/lease.ts";
import { StoreError } from "../../src/store/types.ts";

/** Conditional PUT semantics of S3 on a map (pure logic; the real store is tested against MinIO). */
function conditionalMap(opts: { honour?: boolean; clock?: { t: number } } = {}) {
  const honour = opts.honour ?? true;
  /** S3's clock (Last-Modified); the test's clock unless told otherwise. */
  const s3clock = opts.clock ?? { t: 1_000_000 };
  const objects = new Map<string, { body: Uint8Array; etag: string; lastModifiedMs: number }>();
  let n = 0;
  const store: LeaseStore & { objects: typeof objects; puts: number } = {
    bucket: "b",
    objects,
    puts: 0,
    async getSmall(key) {
      const o = objects.get(key);
      return o ? { body: o.body, etag: o.etag } : null;
    },
    async putSmall(key, body, cond) {
      store.puts++;
      const cur = objects.get(key);
      if (honour && cond?.ifNoneMatch && cur !== undefined) throw new StoreError("precondition", "412", { status: 412 });
      if (honour && cond?.ifMatch !== undefined && cur?.etag !== cond.ifMatch) throw new StoreError("precondition", "412", { status: 412 });
      const etag = `e${++n}`;
      objects.set(key, { body: body.slice(), etag, lastModifiedMs: Math.floor(s3clock.t / 1000) * 1000 });
      return etag;
    },
    async head(key) {
      const o = objects.get(key);
      return o ? { key, size: o.body.length, etag: o.etag, lastModifiedMs: o.lastModifiedMs } : null;
    },
  };
  return store;
}

function lease(store: LeaseStore, over: Partial<ConstructorParameters<typeof WorkdirLease>[0]> = {}, clock = { t: 1_000_000 }) {
  return new WorkdirLease({
    store, prefix: "wd/", node: "n1", cacheDir: "/c1", pid: 10, bootId: "boot", runId: "r1", leaseMs: 30_000,
    now: () => clock.t, mono: () => clock.t, ...over,
  });
}

const read = (s: ReturnType<typeof conditionalMap>) => parseLease(s.objects.get(leaseKey("wd/"))!.body)!;

describe("WorkdirLease", () => {
  test("the fence: this node writes until its last sent renewal + lease - margin; another node takes over only after expiry", async () => {
    const clock = { t: 1_000_000 };
    const s = conditionalMap({ clock });
    const a = lease(s, {}, clock); // lease 30 s, margin 7.5 s
    expect(fenceMarginMs(30_000)).toBe(7_500);
    await a.acquire();
    const deadline = 1_000_000 + 30_000 - 7_500;
    // This side of the boundary: A may still write, and no other node may take the lease.
    clock.t = deadline - 1;
    expect(a.fenceReason()).toBeNull();
    expect(a.fenceLeftMs()).toBe(1);
    await expect(lease(s, { node: "n2", cacheDir: "/c2", runId: "r2" }, clock).acquire()).rejects.toBeInstanceOf(LeaseHeldError);
    // The other side: A no longer writes, for the whole margin before another node can take over.
    clock.t = deadline;
    expect(a.fenceReason()).toContain("can no longer be relied on by this node's clock");
    clock.t = 1_000_000 + 30_000; // the expiry itself: still not taken (expiresMs < now is needed)
    await expect(lease(s, { node: "n2", cacheDir: "/c2", runId: "r2" }, clock).acquire()).rejects.toBeInstanceOf(LeaseHeldError);
    clock.t += 1;
    const b = lease(s, { node: "n2", cacheDir: "/c2", runId: "r2" }, clock);
    expect((await b.acquire()).how).toBe("took-over-expired");
    expect(b.fenceReason()).toBeNull();
    expect(await a.renew()).toBe(false);
    expect(a.fenceReason()).toContain("LOST");
  });

  test("the fence counts from when the renewal was sent, not from its (slow) answer", async () => {
    const clock = { t: 1_000_000 };
    const s = conditionalMap({ clock });
    const a = lease(s, {}, clock);
    await a.acquire();
    const put = s.putSmall;
    s.putSmall = async (...args) => {
      const etag = await put(...args);
      clock.t += 5_000; // the answer takes 5 s to come back
      return etag;
    };
    clock.t = 1_010_000;
    expect(await a.renew()).toBe(true);
    expect(clock.t).toBe(1_015_000);
    expect(a.fenceLeftMs()).toBe(1_010_000 + 30_000 - 7_500 - 1_015_000);
  });

  test("a renewal S3 applied whose answer was lost (412 on the retry) is adopted, not lost", async () => {
    const clock = { t: 1_000_000 };
    const s = conditionalMap({ clock });
    const a = lease(s, {}, clock);
    await a.acquire();
    const put = s.putSmall;
    s.putSmall = async (...args) => {
      await put(...args); // applied...
      s.putSmall = put;
      throw new StoreError("precondition", "412 (the retry of a write whose answer was lost)", { status: 412 });
    };
    clock.t = 1_010_000;
    expect(await a.renew()).toBe(true);
    expect(a.status()).toMatchObject({ state: "held", adopted: 1, renewFailures: 0, expiresMs: 1_040_000 });
    expect(a.fenceLeftMs()).toBe(30_000 - 7_500);
    expect(await a.renew()).toBe(true); // the adopted ETag is the one S3 has
    expect(await a.release()).toBe(true);
  });

  test("a lost answer at the release is adopted: the lease is released, not lost", async () => {
    const s = conditionalMap();
    const a = lease(s);
    await a.acquire();
    const put = s.putSmall;
    s.putSmall = async (...args) => {
      await put(...args);
      s.putSmall = put;
      throw new StoreError("precondition", "412", { status: 412 });
    };
    expect(await a.release()).toBe(true);
    expect(a.status().state).toBe("released");
    expect(read(s).state).toBe("released");
  });

  test("a 412 whose lease names another run (same holder, restarted) is lost", async () => {
    const clock = { t: 1_000_000 };
    const s = conditionalMap({ clock });
    const a = lease(s, {}, clock);
    await a.acquire();
    await lease(s, { pid: 11, runId: "r2" }, clock).acquire(); // same cache dir, a new run resumed it
    expect(await a.renew()).toBe(false);
    expect(a.status().state).toBe("lost");
  });

  test("the timer and the pre-upload renewal share one renewal in flight", async () => {
    const s = conditionalMap();
    const a = lease(s);
    await a.acquire();
    const before = s.puts;
    const [x, y] = await Promise.all([a.renew(), a.renew()]);
    expect([x, y]).toEqual([true, true]);
    expect(s.puts - before).toBe(1);
    expect(a.status().state).toBe("held");
  });

  test("a holder whose clock is behind (expired by its own expiry, but written to S3 just now) is refused, naming the clocks", async () => {
    const clock = { t: 1_000_000 };
    const s = conditionalMap({ clock });
    const behind = { t: clock.t - 60_000 }; // n1's clock is a minute behind
    const a = lease(s, {}, behind);
    await a.acquire();
    const b = lease(s, { node: "n2", cacheDir: "/c2", runId: "r2" }, clock);
    const err = await b.acquire().catch((e) => e);
    expect(err).toBeInstanceOf(LeaseHeldError);
    expect(err.message).toContain("clock is about 60 s behind");
    expect(err.message).toContain("node n1");
    // Once S3's copy is older than a lease time, the holder is taken to be dead.
    clock.t += 31_000;
    expect((await b.acquire()).how).toBe("took-over-expired");
  });

  test("first start creates the lease; a second holder is refused with the holder and expiry named", async () => {
    const s = conditionalMap();
    const clock = { t: 1_000_000 };
    const a = lease(s, {}, clock);
    expect((await a.acquire()).how).toBe("created");
    expect(read(s)).toMatchObject({ state: "held", node: "n1", pid: 10, runId: "r1", expiresMs: 1_030_000 });
    const b = lease(s, { node: "n2", cacheDir: "/c2", pid: 20, runId: "r2" }, clock);
    const err = await b.acquire().catch((e) => e);
    expect(err).toBeInstanceOf(LeaseHeldError);
    expect(err.message).toContain("node n1 (pid 10, run r1, cache /c1)");
    expect(err.message).toContain(new Date(1_030_000).toISOString());
    expect(err.message).toContain("--take-over");
    expect(b.status().state).toBe("none");
  });

  test("released and expired leases are taken over; a live one only with force", async () => {
    const s = conditionalMap();
    const clock = { t: 1_000_000 };
    const a = lease(s, {}, clock);
    await a.acquire();
    expect(await a.release()).toBe(true);
    expect(read(s).state).toBe("released");
    const b = lease(s, { node: "n2", cacheDir: "/c2", runId: "r2" }, clock);
    expect((await b.acquire()).how).toBe("took-over-released");
    clock.t += 31_000; // b stops renewing (dead): by its own expiry and by S3's Last-Modified
    const c = lease(s, { node: "n3", cacheDir: "/c3", runId: "r3" }, clock);
    const r = await c.acquire();
    expect(r.how).toBe("took-over-expired");
    expect(r.previous?.node).toBe("n2");
    const d = lease(s, { node: "n4", cacheDir: "/c4", runId: "r4" }, clock);
    await expect(d.acquire()).rejects.toBeInstanceOf(LeaseHeldError);
    expect((await d.acquire({ force: true })).how).toBe("took-over-forced");
    expect(read(s).node).toBe("n4");
  });

  test("the same holder (host + cache dir) resumes its own live lease after a crash", async () => {
    const s = conditionalMap();
    const clock = { t: 1_000_000 };
    await lease(s, { pid: 10, runId: "r1" }, clock).acquire();
    clock.t += 1_000;
    const again = lease(s, { pid: 11, runId: "r2" }, clock);
    expect((await again.acquire()).how).toBe("resumed");
    expect(read(s)).toMatchObject({ pid: 11, runId: "r2", startedMs: 1_000_000 });
  });

  test("renewal extends; a renewal after a takeover reports the lease lost and who has it", async () => {
    const clock = { t: 1_000_000 };
    const s = conditionalMap({ clock });
    const a = lease(s, {}, clock);
    await a.acquire();
    clock.t += 10_000;
    expect(await a.renew()).toBe(true);
    expect(a.status().expiresMs).toBe(1_040_000);
    clock.t += 60_000;
    expect(a.fenceReason()).toContain("can no longer be relied on");
    await lease(s, { node: "n2", cacheDir: "/c2", runId: "r2" }, clock).acquire();
    expect(await a.renew()).toBe(false);
    const st = a.status();
    expect(st.state).toBe("lost");
    expect(st.takenBy).toContain("node n2");
    expect(await a.release()).toBe(false); // never overwrites the new holder
    expect(read(s).node).toBe("n2");
  });

  test("a transient renewal failure is counted, the lease stays held", async () => {
    const s = conditionalMap();
    const a = lease(s);
    await a.acquire();
    const put = s.putSmall;
    s.putSmall = async () => {
      throw new StoreError("network", "reset");
    };
    await expect(a.renew()).rejects.toThrow("reset");
    expect(a.status()).toMatchObject({ state: "held", renewFailures: 1, lastError: "reset" });
    s.putSmall = put;
    expect(await a.renew()).toBe(true);
    expect(a.status().renewFailures).toBe(0);
  });

  test("the probe tells an endpoint that honours conditional writes from one that ignores them", async () => {
    const good = conditionalMap();
    const a = lease(good);
    await a.acquire();
    expect(await a.probeConditionalWrites()).toBe(true);
    expect(a.status().conditionalWrites).toBe(true);
    expect(await a.renew()).toBe(true); // the probe left our ETag valid

    const bad = conditionalMap({ honour: false });
    const b = lease(bad);
    await b.acquire();
    expect(await b.probeConditionalWrites()).toBe(false);
    expect(read(bad).state).toBe("held");
    expect(await b.renew()).toBe(true);
  });

  test("an unreadable lease object is not overwritten without force", async () => {
    const s = conditionalMap();
    s.objects.set(leaseKey("wd/"), { body: new TextEncoder().encode("{not json"), etag: "x", lastModifiedMs: 0 });
    await expect(lease(s).acquire()).rejects.toThrow("not a lease bucketfs can read");
    expect((await lease(s).acquire({ force: true })).how).toBe("took-over-forced");
  });
});

test("parseLease rejects what bucketfs did not write", () => {
  const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  expect(parseLease(enc({ v: 2 }))).toBeNull();
  expect(parseLease(new Uint8Array([0xff, 0xfe]))).toBeNull();
  expect(parseLease(enc({ v: 1, state: "held", holder: "h", node: "n", bootId: "b", runId: "r", pid: 1, startedMs: 1, renewedMs: 1, expiresMs: "x" }))).toBeNull();
  expect(parseLease(enc({ v: 1, state: "held", holder: "h", node: "n", bootId: "b", runId: "r", pid: 1, startedMs: 1, renewedMs: 1, expiresMs: 2 }))?.expiresMs).toBe(2);
});
