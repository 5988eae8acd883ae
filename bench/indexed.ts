/**
 * Indexed access row (issue 21, item 3): what pipelines do to BAM/CRAM/VCF files through their
 * indexes, made synthetic. `--procs` processes (default 20), all at once as a pipeline runs them,
 * each read `--regions` 64 KiB regions (default 4) of one `--mib` MiB object (default 1024) at
 * offsets drawn from a fixed seed. Bytes fetched are the GetObject answer bytes counted by a
 * loopback proxy between the daemon and MinIO (test/helpers/fault-proxy.ts), not timed; every
 * region read is checked against the local copy. The page cache is dropped before each round.
 * Two objects, both boto3 multipart uploads with 8 MiB parts (boto3's and the AWS CLI's
 * default), as users' tools make them:
 *   - with ChecksumAlgorithm=CRC32C (composite checksums): its parts are checked one by one,
 *     so they are the blocks kept after a close;
 *   - without checksums (ETag only): checked only whole, so nothing is kept after a close.
 * Rounds, for each object:
 *   - round 1, cold (fresh cache): bytes fetched against the blocks the regions touch (1 MiB
 *     blocks; and parts, the unit a part-checked object is fetched and kept in); target ≤ 2×;
 *   - round 2, the same processes again on the same mount: target 0 bytes fetched (objects
 *     with part checksums);
 *   - round 3, the same again after a daemon restart over the same cache dir: target 0 bytes
 *     fetched (objects with part checksums). Kept parts are recorded in the index (the
 *     `cache_parts` table, docs/SEMANTICS.md "Objects ≥ 8 MiB"), so they survive a clean
 *     restart (and a crash; only a run that ended with the machine forgets them). The ETag-only
 *     object keeps nothing, so it fetches its blocks again in every round.
 * The rounds themselves (dropping the page cache, counting, the restart) are bench/lib/rounds.ts.
 *
 * Run (root):  node_modules/.bin/bun bench/indexed.ts [--mib 1024] [--procs 20] [--regions 4] [--seed 21] [--out FILE.md]
 * Is: a measurement program (loopback only; everything it creates goes away). Is not: a test.
 */
import { mkdirSync, mkdtempSync, openSync, readSync, closeSync, rmSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startS3Server, TEST_ROOT } from "../test/helpers/s3server.ts";
import { s3tool } from "../test/helpers/s3tool.ts";
import { startFaultProxy } from "../test/helpers/fault-proxy.ts";
import { daemonDir, removeDir } from "../test/helpers/daemon.ts";
import { writeRandom } from "../test/helpers/files.ts";
import { fmtNum, loadavg, sh } from "./lib/util.ts";
import { fetchedBy, rng, threeRounds } from "./lib/rounds.ts";

const { values: argv } = parseArgs({
  options: {
    mib: { type: "string", default: "1024" },
    procs: { type: "string", default: "20" },
    regions: { type: "string", default: "4" },
    seed: { type: "string", default: "21" },
    out: { type: "string" },
  },
});
const MiB = 1024 * 1024;
const SIZE = Number(argv.mib) * MiB;
const PROCS = Number(argv.procs);
const REGIONS = Number(argv.regions);
const REGION = 64 * 1024;
const BLOCK = MiB;
const PART = 8 * MiB;
const BUCKET = "indexed";
const OBJECTS = [
  { key: "aln/crc32c.bam", what: "part checksums (boto3 multipart, 8 MiB parts, CRC32C)", opts: { multipart: true, partSize: PART, checksum: "crc32c" as const }, keeps: true },
  { key: "aln/etag.bam", what: "ETag only (boto3 multipart, 8 MiB parts, no checksum)", opts: { multipart: true, partSize: PART }, keeps: false },
];

mkdirSync(TEST_ROOT, { recursive: true });
const work = mkdtempSync(join(TEST_ROOT, "indexed-"));
const rand = rng(Number(argv.seed));
// Offsets aligned to 512 bytes (as BGZF block starts are arbitrary; an index points anywhere).
const plan = Array.from({ length: PROCS }, () =>
  Array.from({ length: REGIONS }, () => Math.floor((rand() * (SIZE - REGION)) / 512) * 512),
);
const touchedIn = (unit: number): number => {
  const set = new Set<number>();
  for (const p of plan) for (const off of p) for (let b = Math.floor(off / unit); b <= Math.floor((off + REGION - 1) / unit); b++) set.add(b);
  return set.size;
};
const blocks = touchedIn(BLOCK);
const parts = touchedIn(PART);
const lines: string[] = [];
const say = (l: string) => {
  console.log(l);
  lines.push(l);
};

const server = await startS3Server();
const proxy = await startFaultProxy(server);
const dir = daemonDir("indexed");
try {
  const s3 = s3tool(server);
  await s3.mkbucket(BUCKET);
  const local = join(work, "sample.bam");
  writeRandom(local, SIZE);
  for (const o of OBJECTS) await s3.put(BUCKET, o.key, { file: local }, o.opts);
  const fd = openSync(local, "r");
  const want = plan.map((p) =>
    p.map((off) => {
      const b = Buffer.alloc(REGION);
      readSync(fd, b, 0, REGION, off);
      return createHash("sha256").update(b).digest("hex");
    }),
  );
  closeSync(fd);
  say(`indexed access: ${PROCS} processes × ${REGIONS} × 64 KiB of a ${SIZE / MiB} MiB object, seed ${argv.seed}: ` +
    `${blocks} blocks of 1 MiB touched, in ${parts} parts of 8 MiB; load ${loadavg()}`);
  say("");
  say("| object | round | fetched, MiB | × 1 MiB blocks touched | × 8 MiB parts touched | time, s |");
  say("|---|---|---:|---:|---:|---:|");

  const round = async (o: (typeof OBJECTS)[number], name: string, mnt: string): Promise<number> => {
    const path = `${mnt}/${o.key}`;
    const { r: outs, fetched, s } = await fetchedBy(proxy, () =>
      Promise.all(
        plan.map((p) =>
          sh(p.map((off) => `dd if='${path}' iflag=skip_bytes,count_bytes skip=${off} count=${REGION} bs=${REGION} status=none | sha256sum`).join("; "), { timeoutS: 600 }),
        ),
      ),
    );
    outs.forEach((out, i) => {
      const got = out.out.trim().split("\n").map((l) => l.split(" ")[0]);
      if (JSON.stringify(got) !== JSON.stringify(want[i])) throw new Error(`${o.key} ${name}: process ${i} read wrong bytes`);
    });
    say(`| ${o.what} | ${name} | ${fmtNum(fetched / MiB, 1)} | ${fmtNum(fetched / (blocks * BLOCK), 2)} | ${fmtNum(fetched / (parts * PART), 2)} | ${fmtNum(s, 2)} |`);
    return fetched;
  };
  const [crc, etag] = await threeRounds({ server, proxy, bucket: BUCKET, dir, objects: OBJECTS, round });
  say("");
  const [c1, c2, c3] = crc!;
  const [e1] = etag!;
  say(`targets: part checksums, round 1 ≤ 2× the parts touched: ${c1! <= 2 * parts * PART ? "met" : "NOT met"}; ` +
    `round 2 fetches 0 bytes: ${c2 === 0 ? "met" : "NOT met"}; round 3 (after a restart) fetches 0 bytes: ${c3 === 0 ? "met" : "NOT met"}; ETag only, round 1 ≤ 2× the 1 MiB blocks touched: ${e1! <= 2 * blocks * BLOCK ? "met" : "NOT met"} ` +
    `(its blocks are not kept after a close: they can only be checked with the whole object)`);
  if (argv.out) writeFileSync(argv.out, lines.join("\n") + "\n");
} finally {
  removeDir(dir);
  await proxy.stop();
  await server.stop();
  rmSync(work, { recursive: true, force: true });
}
process.exit(0);
