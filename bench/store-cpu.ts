/**
 * Benchmark: the S3 store's own CPU cost, in-process against a throwaway local MinIO
 * (test/helpers/s3server.ts): (1) CPU per small PUT (N files of 64 KiB uploaded with
 * `store.upload`, 16 at a time), (2) CPU per GiB of a cold streamed read (a PartialObject reading
 * a large object sequentially into a cache file, as the daemon does for objects >= 8 MiB,
 * including the whole-object check where the tree has one). CPU is this process' user+system
 * time (MinIO runs in its own process); FUSE is not involved.
 *
 * Is: a measurement script for A/B runs of two checkouts: BENCH_SRC=/path/to/other/src runs
 * the same measurement with another tree's store and cache. Is not: a test.
 *
 * Run:  node_modules/.bin/bun bench/store-cpu.ts
 * Env:  BENCH_SRC (this tree's src), BENCH_PUTS (2000), BENCH_READ_MIB (512)
 */
import { mkdtempSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { startS3Server, TEST_ROOT } from "../test/helpers/s3server.ts";
import { s3tool } from "../test/helpers/s3tool.ts";
import { writeRandom } from "../test/helpers/files.ts";

const MiB = 1024 * 1024;
const SRC = resolve(process.env.BENCH_SRC ?? join(import.meta.dir, "..", "src"));
const PUTS = Number(process.env.BENCH_PUTS ?? 2000);
const READ_MIB = Number(process.env.BENCH_READ_MIB ?? 512);

const { createS3Store } = await import(join(SRC, "store/s3.ts"));
const { PartialObject } = await import(join(SRC, "cache/partial-object.ts"));
const { logger } = await import(join(SRC, "util/log.ts"));

const cpu = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

const server = await startS3Server();
const tmp = mkdtempSync(join(TEST_ROOT, "store-cpu-"));
try {
  await server.createBucket("cpu");
  const store = createS3Store({
    bucket: "cpu", accessKeyId: server.accessKey, secretAccessKey: server.secretKey, region: server.region,
    endpoint: server.endpoint, partSize: 16 * MiB, transferConcurrency: 16,
  });
  // (1) small PUTs
  const files: string[] = [];
  for (let i = 0; i < 16; i++) {
    const p = join(tmp, `small${i}`);
    writeRandom(p, 64 * 1024);
    files.push(p);
  }
  await store.upload("warm/0", files[0]!); // first request: connection, credentials
  let next = 0;
  const c0 = cpu();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: 16 }, async (_, w) => {
    while (next < PUTS) {
      const i = next++;
      await store.upload(`small/${i}`, files[w]!);
    }
  }));
  const putCpu = cpu() - c0;
  const putS = (performance.now() - t0) / 1000;
  console.log(`small PUTs: ${PUTS} x 64 KiB, 16 at a time: ${putS.toFixed(2)} s, process CPU ${putCpu.toFixed(2)} s = ${((putCpu * 1000) / PUTS).toFixed(3)} ms per PUT (${SRC})`);

  // (2) cold streamed read
  const bigSrc = join(tmp, "big.src");
  writeRandom(bigSrc, READ_MIB * MiB);
  const obj = await s3tool(server).put("cpu", "big/obj", { file: bigSrc });
  rmSync(bigSrc);
  const info = await store.head("big/obj");
  const size = READ_MIB * MiB;
  let done = false;
  const c1 = cpu();
  const t1 = performance.now();
  const p = new PartialObject("big/obj", info.etag, size, join(tmp, "big.tmp"), join(tmp, "big.final"), store, () => (done = true), logger("bench"));
  for (let off = 0; off < size; off += 128 * 1024) await p.ensure(off, 128 * 1024);
  for (let i = 0; i < 600 && !done; i++) await Bun.sleep(50);
  const readCpu = cpu() - c1;
  const readS = (performance.now() - t1) / 1000;
  console.log(
    `cold streamed read: ${READ_MIB} MiB (ETag ${obj?.etag ?? "?"}): ${readS.toFixed(2)} s, ${(READ_MIB / readS).toFixed(0)} MiB/s, ` +
      `process CPU ${readCpu.toFixed(2)} s = ${((readCpu * 1024) / READ_MIB).toFixed(2)} s per GiB; cached: ${done}`,
  );
} finally {
  await server.stop();
  rmSync(tmp, { recursive: true, force: true });
}
