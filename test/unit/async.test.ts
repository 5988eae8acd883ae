import { describe, expect, test } from "bun:test";
import { createLimiter, linkSignals, runAll, singleFlight, sleep } from "../../src/util/async.ts";

/** A promise with its resolve exposed. */
function gate<T = void>() {
  let open!: (v: T) => void;
  const p = new Promise<T>((r) => (open = r));
  return { p, open };
}

describe("singleFlight", () => {
  test("callers during a run share it; a later call runs again", async () => {
    const sf = singleFlight<string, number>();
    let calls = 0;
    const g = gate<number>();
    const a = sf.run("k", () => (calls++, g.p));
    const b = sf.run("k", () => (calls++, Promise.resolve(-1)));
    expect(sf.size).toBe(1);
    expect(sf.running("k")).toBe(a);
    g.open(7);
    expect(await a).toBe(7);
    expect(await b).toBe(7);
    expect(calls).toBe(1);
    expect(sf.size).toBe(0);
    expect(await sf.run("k", async () => (calls++, 8))).toBe(8);
    expect(calls).toBe(2);
  });

  test("a failed run is shared and then forgotten", async () => {
    const sf = singleFlight<string, number>();
    const a = sf.run("k", async () => {
      throw new Error("boom");
    });
    const b = sf.run("k", async () => 1);
    await expect(a).rejects.toThrow("boom");
    await expect(b).rejects.toThrow("boom");
    expect(await sf.run("k", async () => 2)).toBe(2);
  });

  test("a synchronous throw in fn becomes a rejection and frees the key", async () => {
    const sf = singleFlight<string, number>();
    await expect(sf.run("k", () => { throw new Error("sync"); })).rejects.toThrow("sync");
    expect(sf.size).toBe(0);
  });
});

describe("createLimiter", () => {
  test("never more than capacity at once, FIFO", async () => {
    const lim = createLimiter(2);
    let now = 0;
    let peak = 0;
    const order: number[] = [];
    const gates = Array.from({ length: 5 }, () => gate());
    const runs = gates.map((g, i) =>
      lim.run(async () => {
        order.push(i);
        now++;
        peak = Math.max(peak, now);
        await g.p;
        now--;
      }),
    );
    await Promise.resolve();
    expect(lim.inUse).toBe(2);
    expect(lim.waiting).toBe(3);
    for (const g of gates) g.open();
    await Promise.all(runs);
    expect(peak).toBe(2);
    expect(order).toEqual([0, 1, 2, 3, 4]);
    expect(lim.inUse).toBe(0);
  });

  test("weights: bytes in flight stay under capacity; an oversized item runs alone", async () => {
    const lim = createLimiter(10);
    const r1 = await lim.acquire(6);
    let got2 = false;
    const p2 = lim.acquire(6).then((r) => ((got2 = true), r));
    await Promise.resolve();
    expect(got2).toBe(false);
    r1();
    const r2 = await p2;
    expect(lim.inUse).toBe(6);
    r2();
    r2(); // a second release is a no-op
    expect(lim.inUse).toBe(0);
    const big = await lim.acquire(25);
    expect(lim.inUse).toBe(25);
    big();
  });

  test("an aborted waiter leaves the queue and rejects with the reason", async () => {
    const lim = createLimiter(1);
    const r = await lim.acquire();
    const ac = new AbortController();
    const waiting = lim.acquire(1, ac.signal);
    expect(lim.waiting).toBe(1);
    ac.abort(new Error("stop"));
    await expect(waiting).rejects.toThrow("stop");
    expect(lim.waiting).toBe(0);
    r();
    expect(lim.inUse).toBe(0);
  });
});

test("runAll bounds concurrency, runs every item and reports the first error", async () => {
  let now = 0;
  let peak = 0;
  const seen: number[] = [];
  await expect(
    runAll([1, 2, 3, 4, 5, 6], 3, async (n) => {
      now++;
      peak = Math.max(peak, now);
      await Promise.resolve();
      seen.push(n);
      now--;
      if (n === 2) throw new Error("two");
    }),
  ).rejects.toThrow("two");
  expect(peak).toBe(3);
  expect(seen.sort()).toEqual([1, 2, 3, 4, 5, 6]);
});

test("runAll pulls items only as slots free (a generator is never drained ahead)", async () => {
  let pulled = 0;
  let done = 0;
  let aheadMax = 0;
  function* items(): Generator<number> {
    for (let i = 0; i < 1000; i++) {
      pulled++;
      aheadMax = Math.max(aheadMax, pulled - done);
      yield i;
    }
  }
  await runAll(items(), 4, async () => {
    await Promise.resolve();
    done++;
  });
  expect(done).toBe(1000);
  expect(aheadMax).toBeLessThanOrEqual(4);
});

describe("linkSignals", () => {
  test("fires with the first input's reason and unhooks from the others", () => {
    const a = new AbortController();
    const b = new AbortController();
    const linked = linkSignals(a.signal, undefined, b.signal);
    expect(linked.signal.aborted).toBe(false);
    a.abort("first");
    expect(linked.signal.aborted).toBe(true);
    expect(linked.signal.reason).toBe("first");
    b.abort("second");
    expect(linked.signal.reason).toBe("first");
  });

  test("an already-aborted input aborts at once; own abort works", () => {
    const a = new AbortController();
    a.abort("pre");
    expect(linkSignals(a.signal).signal.reason).toBe("pre");
    const own = linkSignals();
    own.abort("mine");
    expect(own.signal.reason).toBe("mine");
  });
});

test("sleep ends early on abort", async () => {
  const ac = new AbortController();
  const p = sleep(60_000, ac.signal);
  ac.abort();
  await p; // would time the test out if abort were ignored
  await sleep(1);
  expect(ac.signal.aborted).toBe(true);
});
