/**
 * What checking the bytes costs, per kind of object, and whether hashing on a Worker keeps the
 * READ thread free. One MinIO; for each kind an object of --mib MiB:
 *   etag       boto3 multipart (16 MiB parts), no checksum: multipart ETag, MD5 per part
 *   md5        boto3 single PUT: MD5 ETag
 *   crc32      boto3 multipart with CRC32: composite, checked part by part on the READ thread
 *   crc64nvme  bucketfs' own upload (multipart, FULL_OBJECT CRC64NVME, as current AWS SDKs)
 * and per rep, alternating the order, a cold read of each (fresh mount, page cache dropped)
 * with the hashing Worker (A) and with BUCKETFS_HASH_WORKER=0 (B: hashing on the READ thread).
 * Per read: MiB/s, daemon CPU per GiB, and the latency of each 1 MiB read() as the reader sees
 * it (p50 / p99 / max), from a small Python reader. Also the raw cost of each hash here.
 *
 * Run (root):  node_modules/.bin/bun bench/verify-ab.ts [--reps 2] [--mib 512] [--kinds etag,md5,crc32,crc64nvme]
 * Is: a measurement program (loopback only; everything it creates goes away). Is not: a test.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { TEST_ROOT } from "../test/helpers/s3server.ts";
import { s3tool, type PutOptions } from "../test/helpers/s3tool.ts";
import { writeRandom } from "../test/helpers/files.ts";
import { createS3Store } from "../src/store/s3.ts";
import { newHasher, type HashAlgorithm } from "../src/store/checksum.ts";
import { startBenchServer } from "./lib/server.ts";
import { cleanupAllSync, mount, type SystemsContext } from "./lib/systems.ts";
import { abSamples, dropCaches, fmtNum, loadavg, MiB, sh, withUsage } from "./lib/util.ts";

const { values: argv } = parseArgs({
  options: {
    reps: { type: "string", default: "2" },
    mib: { type: "string", default: "512" },
    kinds: { type: "string", default: "etag,md5,crc32,crc64nvme" },
  },
});
const REPS = Number(argv.reps);
const SIZE = Number(argv.mib) * MiB;
const KINDS = argv.kinds!.split(",");
const BUCKET = "verifyab";

mkdirSync(TEST_ROOT, { recursive: true });
const workRoot = mkdtempSync(join(TEST_ROOT, "verify-ab-"));
process.on("exit", () => {
  cleanupAllSync();
  rmSync(workRoot, { recursive: true, force: true });
});
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => process.exit(130));

const READER = join(workRoot, "reader.py");
writeFileSync(READER, `import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
lat = []
n = 0
t0 = time.perf_counter()
while True:
    a = time.perf_counter()
    b = os.read(fd, 1 << 20)
    lat.append((time.perf_counter() - a) * 1000)
    if not b:
        break
    n += len(b)
total = time.perf_counter() - t0
lat.sort()
print(n, total, lat[len(lat) // 2], lat[int(len(lat) * 0.99)], lat[-1])
`);

const samples = abSamples();
const put = samples.put;

function hashCost(alg: HashAlgorithm): number {
  const buf = new Uint8Array(64 * MiB).map((_, i) => i & 0xff);
  const h = newHasher(alg);
  h.update(buf);
  const c0 = process.cpuUsage();
  for (let i = 0; i < 8; i++) h.update(buf);
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1e6 / 0.5; // 8 × 64 MiB = 0.5 GiB
}

async function main(): Promise<void> {
  console.log(`verify A/B: ${KINDS.join(", ")}, ${SIZE / MiB} MiB each, ${REPS} reps; A = hashing Worker, B = BUCKETFS_HASH_WORKER=0; load ${loadavg()}`);
  for (const alg of ["crc32", "crc32c", "crc64nvme", "md5"] as const) console.log(`  raw ${alg}: ${fmtNum(hashCost(alg), 3)} CPU s/GiB`);
  const bench = await startBenchServer(undefined);
  const s3 = s3tool(bench.server);
  try {
    await s3.mkbucket(BUCKET);
    const local = join(workRoot, "local.bin");
    writeRandom(local, SIZE);
    const made: Record<string, PutOptions | "bucketfs"> = {
      etag: { multipart: true, partSize: 16 * MiB },
      md5: {},
      crc32: { multipart: true, partSize: 16 * MiB, checksum: "crc32" },
      crc64nvme: "bucketfs",
    };
    for (const k of KINDS) {
      const how = made[k];
      if (how === undefined) throw new Error(`unknown kind ${k}`);
      if (how === "bucketfs") {
        const store = createS3Store({
          bucket: BUCKET, accessKeyId: bench.server.accessKey, secretAccessKey: bench.server.secretKey, region: bench.server.region,
          endpoint: bench.server.endpoint, partSize: 16 * MiB, transferConcurrency: 4,
        });
        await store.upload(`${k}.bin`, local);
      } else await s3.put(BUCKET, `${k}.bin`, { file: local }, how);
      console.log(`  made ${k}.bin: ${JSON.stringify(await s3.checksums(BUCKET, `${k}.bin`))}`);
    }
    for (let rep = 1; rep <= REPS; rep++) {
      const variants = rep % 2 ? ["A", "B"] : ["B", "A"];
      for (const k of KINDS) {
        for (const v of variants) {
          const ctx: SystemsContext = { server: bench.server, workRoot, bucketfsExtra: {}, bucketfsEnv: v === "B" ? { BUCKETFS_HASH_WORKER: "0" } : {} };
          const m = await mount(ctx, "bucketfs", BUCKET);
          try {
            dropCaches();
            const u = await withUsage(m.pid, () => sh(`python3 '${READER}' '${m.root}/${k}.bin'`, { timeoutS: 1800 }));
            const [n, secs, p50, p99, max] = u.r.out.trim().split(" ").map(Number) as [number, number, number, number, number];
            if (n !== SIZE) throw new Error(`${k} ${v}: read ${n} bytes (${u.r.out.trim()} ${u.r.err ?? ""})`);
            const key = `${k} ${v}`;
            put(key, "MiB/s", SIZE / MiB / secs);
            put(key, "CPU s/GiB", u.cpu / (SIZE / (1024 * MiB)));
            put(key, "read p50 ms", p50);
            put(key, "read p99 ms", p99);
            put(key, "read max ms", max);
            console.log(`rep ${rep} ${key}: ${fmtNum(SIZE / MiB / secs)} MiB/s, ${fmtNum(u.cpu / (SIZE / (1024 * MiB)), 2)} s/GiB, read() p50 ${fmtNum(p50, 2)} p99 ${fmtNum(p99, 1)} max ${fmtNum(max, 1)} ms; load ${loadavg()}`);
          } finally {
            await m.cleanup();
          }
        }
      }
    }
  } finally {
    await bench.stop();
  }
  samples.print(12, 12);
}

await main();
