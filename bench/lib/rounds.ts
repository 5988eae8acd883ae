/**
 * The rounds of the bytes-fetched rows (bench/indexed.ts, bench/bam.ts): the same readers run
 * three times over one bucket, each round measured by the GetObject answer bytes that a loopback
 * proxy (test/helpers/fault-proxy.ts) between the daemon and MinIO forwarded.
 *
 * Is: the round plumbing those rows share: a seeded generator (mulberry32), one measured round
 * (page cache dropped first, wall time of the readers, then the proxy's counter read once it has
 * stopped moving, so read-ahead still on its way counts for the round that caused it), and the
 * three-round schedule: 1 cold (fresh daemon, empty cache), 2 again on the same mount, 3 again
 * after a daemon restart over the same cache dir. Is not: what the readers do or check (the
 * caller's `round`), or a test.
 */
import type { S3Server } from "../../test/helpers/s3server.ts";
import type { FaultProxy } from "../../test/helpers/fault-proxy.ts";
import { startDaemon, type BucketSpec, type DaemonHandle } from "../../test/helpers/daemon.ts";
import { dropCaches } from "./util.ts";

/** mulberry32: the same sequence in [0, 1) for the same seed, on every run. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Drops the page cache (the daemon's cache is measured, not the kernel's), runs `readers`, then
 * waits until the proxy's GetObject body bytes stop moving for 300 ms. Returns what `readers`
 * returned, the bytes fetched meanwhile and the readers' wall time in seconds.
 */
export async function fetchedBy<T>(proxy: FaultProxy, readers: () => Promise<T>): Promise<{ r: T; fetched: number; s: number }> {
  dropCaches();
  const before = proxy.bodyBytes("GetObject");
  const t0 = performance.now();
  const r = await readers();
  const s = (performance.now() - t0) / 1000;
  let n = proxy.bodyBytes("GetObject");
  for (;;) {
    await Bun.sleep(300);
    const m = proxy.bodyBytes("GetObject");
    if (m === n) break;
    n = m;
  }
  return { r, fetched: n - before, s };
}

export const ROUND_NAMES = ["1, cold", "2, same mount", "3, after a restart"] as const;

/**
 * The three rounds over `objects` (in their order within each round) on one daemon mounting
 * `bucket` through `proxy`, restarted between rounds 2 and 3 over `dir`. `round` gets the object,
 * the round's name and the object's bucket mount point, and returns the round's figure. Returns
 * the figures per object, in round order. The daemon is gone when this returns or throws.
 */
export async function threeRounds<O, R>(opts: {
  server: S3Server;
  proxy: FaultProxy;
  bucket: string;
  dir: string;
  objects: readonly O[];
  round: (o: O, name: (typeof ROUND_NAMES)[number], mnt: string) => Promise<R>;
}): Promise<R[][]> {
  const spec: BucketSpec[] = [{ bucket: opts.bucket }];
  const target = { ...opts.server, endpoint: opts.proxy.endpoint };
  const start = (): Promise<DaemonHandle> => startDaemon(target, spec, { dir: opts.dir, env: { BUCKETFS_LOG_LEVEL: "info" } });
  const stop = async (d: DaemonHandle): Promise<void> => {
    if ((await d.stop()) !== 0) throw new Error(`daemon exit:\n${d.log()}`);
  };
  const res: R[][] = opts.objects.map(() => []);
  let d: DaemonHandle | undefined = await start();
  try {
    for (const name of ROUND_NAMES) {
      if (name === "3, after a restart") {
        const old = d;
        d = undefined;
        await stop(old);
        d = await start();
      }
      const mnt = d.mnt[opts.bucket]!;
      for (const [i, o] of opts.objects.entries()) res[i]!.push(await opts.round(o, name, mnt));
    }
    const last = d;
    d = undefined;
    await stop(last);
  } finally {
    await d?.cleanup();
  }
  return res;
}
