/**
 * Index queries over a far link: `--queries` processes run one after another (as a pipeline runs
 * `samtools view` per region), each reading one 64 KiB region of a `--mib` MiB object at offsets
 * drawn from a fixed seed, with every request to MinIO held `--ms` ms by the fault proxy
 * (test/helpers/fault-proxy.ts: a far link's round trip, per request). Two objects, boto3
 * multipart uploads with 8 MiB parts: ETag only (checked whole) and CRC32C (checked by part,
 * parts kept). Prints the time per query and the HEADs and GETs the proxy counted, per round.
 * With `--base CMD` (a command that runs another build's daemon, e.g. a wrapper around
 * `bun <checkout>/src/cli/main.ts`), rounds alternate that build (A) and this one (B).
 *
 * Run (root):  node_modules/.bin/bun bench/far-queries.ts [--ms 100] [--mib 256] [--queries 20] [--rounds 3] [--base CMD]
 * Is: a measurement program (loopback only; everything it creates goes away). Is not: a test.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startS3Server } from "../test/helpers/s3server.ts";
import { startFaultProxy } from "../test/helpers/fault-proxy.ts";
import { startDaemon, daemonDir, removeDir } from "../test/helpers/daemon.ts";
import { s3tool } from "../test/helpers/s3tool.ts";
import { run } from "../test/helpers/run.ts";
import { rng } from "./lib/rounds.ts";

const { values: argv } = parseArgs({
  options: {
    ms: { type: "string", default: "100" },
    mib: { type: "string", default: "256" },
    queries: { type: "string", default: "20" },
    rounds: { type: "string", default: "3" },
    seed: { type: "string", default: "21" },
    base: { type: "string" },
  },
});
const MiB = 1024 * 1024;
const SIZE = Number(argv.mib) * MiB;
const REGION = 64 * 1024;
const BUCKET = "farqueries";
const KEYS = ["etag.bam", "crc32c.bam"] as const;

const server = await startS3Server();
const proxy = await startFaultProxy(server);
try {
  await server.createBucket(BUCKET);
  const s3 = s3tool(server);
  const body = new Uint8Array(SIZE).map((_, j) => (j * 7 + (j >> 13)) & 0xff);
  await s3.put(BUCKET, KEYS[0], { bytes: body }, { multipart: true, partSize: 8 * MiB });
  await s3.put(BUCKET, KEYS[1], { bytes: body }, { multipart: true, partSize: 8 * MiB, checksum: "crc32c" });
  const next = rng(Number(argv.seed));
  const offsets = Array.from({ length: Number(argv.queries) }, () => Math.floor(next() * (SIZE - REGION)));
  const builds = argv.base ? (["A", "B"] as const) : (["B"] as const);
  console.log(`${offsets.length} queries of ${REGION / 1024} KiB, one process each, every request held ${argv.ms} ms${argv.base ? `; A = ${argv.base}, B = this checkout` : ""}`);
  for (let round = 1; round <= Number(argv.rounds); round++) {
    for (const b of builds) {
      if (b === "A") process.env.BUCKETFS_BIN = argv.base;
      else delete process.env.BUCKETFS_BIN;
      const d = await startDaemon({ ...server, endpoint: proxy.endpoint }, [{ bucket: BUCKET, extra: {} }], { dir: daemonDir(`far-${b}`) });
      try {
        proxy.add({ action: { stall: Number(argv.ms) }, times: Infinity });
        for (const key of KEYS) {
          const h0 = proxy.count("HeadObject");
          const g0 = proxy.count("GetObject");
          const t0 = performance.now();
          for (const off of offsets) {
            const r = await run(`set -o pipefail; dd if='${join(d.mnt[BUCKET]!, key)}' iflag=skip_bytes,count_bytes skip=${off} count=${REGION} bs=${REGION} status=none | sha256sum`);
            const want = new Bun.CryptoHasher("sha256").update(body.subarray(off, off + REGION)).digest("hex");
            if (r.out.split(" ")[0] !== want) throw new Error(`${key} at ${off}: wrong bytes (${r.out.trim()})`);
          }
          const ms = (performance.now() - t0) / offsets.length;
          console.log(`round ${round} ${b} ${key}: ${ms.toFixed(0)} ms per query; HEAD ${proxy.count("HeadObject") - h0}, GET ${proxy.count("GetObject") - g0}`);
        }
      } finally {
        proxy.clear();
        await d.stop();
        await d.cleanup();
        removeDir(d.dir);
      }
    }
  }
} finally {
  delete process.env.BUCKETFS_BIN;
  await proxy.stop();
  await server.stop();
}
