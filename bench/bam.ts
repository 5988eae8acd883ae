/**
 * Real-BAM row (issue 21, "reads as pipelines do them"): region queries of samtools through the
 * mount, as a user ran them: `--procs` (default 20) `samtools view -c <mount>/<key> chrN:a-b`
 * processes at once, one region of `--kbp` (default 10) kbp each, regions drawn from a fixed seed,
 * against a coordinate-sorted, indexed BAM of about `--mib` MiB (default 384).
 *   - The BAM is made here, deterministically: bench/lib/make-bam.py (seeded SAM: chr1-chr3,
 *     reads of 100-150 bp with random bases and qualities) piped into `samtools view -b`, then
 *     `samtools index`. It lives in the run's work dir under the test root and goes away with it.
 *   - It is uploaded, BAM then .bai, twice, with boto3's `upload_file` as users' scripts do
 *     (s3tool upload-file), run by `--python` (default: `python3` on PATH, whose boto3 is what
 *     `pip install boto3` gives, not Debian's 1.26 of the tests, which adds no checksum): once
 *     with the defaults (8 MiB multipart; the checksum this boto3 adds by default: the run
 *     prints what the objects got, from a HEAD with ChecksumMode=ENABLED), once with checksums
 *     only where required (ETag only, as botocore < 1.36 and old aws-cli upload).
 *   - Rounds per object (bench/lib/rounds.ts): 1 cold, 2 the same on the same mount, 3 the
 *     same after a daemon restart over the same cache dir; the page cache is dropped before each.
 *     Each row: GetObject answer bytes a loopback proxy between the daemon and MinIO forwarded
 *     (counted until the counter rests), the GETs, and the wall time of the processes. Every
 *     process's count must equal the same query's on the local BAM, or the run fails.
 *   - Baseline: what samtools itself reads for the same queries on the local file, from an
 *     `strace -y` of each (openat, lseek, read, pread64): bytes read of the BAM and of the .bai,
 *     and the 1 MiB blocks and 8 MiB parts the BAM reads touch, all queries together. Those are
 *     the denominators of the targets (issue 21): round 1 ≤ 2× the parts touched for an object
 *     with composite checksums (fetched and kept by part), ≤ 2× the 1 MiB blocks for an ETag-only
 *     one; rounds 2 and 3 fetch nothing for the composite one.
 *
 * Run (root):  node_modules/.bin/bun bench/bam.ts [--mib 384] [--procs 20] [--kbp 10] [--seed 21] [--python python3] [--out FILE.md]
 * Quick:       node_modules/.bin/bun bench/bam.ts --mib 48 --procs 8
 * Is: a measurement program (loopback only; everything it creates goes away). Is not: a test.
 */
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startS3Server, TEST_ROOT } from "../test/helpers/s3server.ts";
import { s3tool, type ChecksumsResult } from "../test/helpers/s3tool.ts";
import { startFaultProxy } from "../test/helpers/fault-proxy.ts";
import { daemonDir, removeDir } from "../test/helpers/daemon.ts";
import { fmtNum, loadavg, sh } from "./lib/util.ts";
import { fetchedBy, rng, threeRounds } from "./lib/rounds.ts";

const { values: argv } = parseArgs({
  options: {
    mib: { type: "string", default: "384" },
    procs: { type: "string", default: "20" },
    kbp: { type: "string", default: "10" },
    seed: { type: "string", default: "21" },
    python: { type: "string", default: "python3" },
    out: { type: "string" },
  },
});
const MiB = 1024 * 1024;
const PROCS = Number(argv.procs);
const SPAN = Math.round(Number(argv.kbp) * 1000);
const SEED = Number(argv.seed);
if (!(Number(argv.mib) > 0) || !(PROCS >= 1) || !(SPAN >= 1) || !Number.isInteger(SEED)) {
  throw new Error("--mib, --procs and --kbp must be positive, --seed an integer");
}
const SAMTOOLS = "/usr/bin/samtools";
const BLOCK = MiB; // the daemon's block
const PART = 8 * MiB; // boto3's part
const BUCKET = "bam";
const OBJECTS = [
  { key: "aln/sample.bam", what: "boto3 upload_file, defaults", checksums: true },
  { key: "aln/etag/sample.bam", what: "boto3 upload_file, checksums when required (ETag only)", checksums: false },
];

const lines: string[] = [];
const say = (l: string) => {
  console.log(l);
  lines.push(l);
};
/**
 * What one process read of each file, from its `strace -y` log of openat/lseek/read/pread64
 * (one thread: samtools view without -@): read() bytes per path, and the byte ranges it read
 * of `path`.
 */
const readsOf = (log: string, path: string): { bytes: Map<string, number>; ranges: Array<[number, number]> } => {
  const bytes = new Map<string, number>();
  const ranges: Array<[number, number]> = [];
  const pos = new Map<string, number>(); // "fd<path>" -> file position
  for (const l of log.split("\n")) {
    const m = /^(openat|lseek|read|pread64)\((\w+)<([^>]*)>, (.*) = (-?\d+)(?: <[^>]*>)?$/.exec(l) ??
      /^(openat)\(.*\) = (\d+)<([^>]*)>$/.exec(l);
    if (!m) continue;
    const [, call, a, file, rest, ret] = m;
    if (call === "openat") {
      pos.set(`${a}<${file}>`, 0);
      continue;
    }
    const fdKey = `${a}<${file}>`;
    const n = Number(ret);
    if (n < 0) continue;
    if (call === "lseek") pos.set(fdKey, n);
    if (call !== "read" && call !== "pread64") continue;
    const off = call === "pread64" ? Number(/, (\d+)\)$/.exec(rest!)?.[1]) : (pos.get(fdKey) ?? 0);
    if (call === "read") pos.set(fdKey, off + n);
    bytes.set(file!, (bytes.get(file!) ?? 0) + n);
    if (file === path && n > 0) ranges.push([off, off + n]);
  }
  return { bytes, ranges };
};
const unitsTouched = (ranges: Array<[number, number]>, unit: number): number => {
  const set = new Set<number>();
  for (const [a, b] of ranges) for (let u = Math.floor(a / unit); u <= Math.floor((b - 1) / unit); u++) set.add(u);
  return set.size;
};
const countOf = (out: string): number => {
  const first = out.trim().split("\n")[0] ?? "";
  if (!/^\d+$/.test(first)) throw new Error(`samtools view -c printed ${JSON.stringify(out.slice(0, 200))}`);
  return Number(first);
};
const describe = (c: ChecksumsResult): string => {
  const algs = (["crc32", "crc32c", "crc64nvme", "sha1", "sha256"] as const).filter((a) => c[a] !== undefined);
  const parts = /-(\d+)$/.exec(c.etag)?.[1];
  return `ChecksumType ${c.checksumType ?? "none"}, algorithm ${algs.map((a) => `${a.toUpperCase()} ${c[a]}`).join(", ") || "none"}, ` +
    `${parts ? `multipart, ${parts} parts` : "one PUT"}`;
};

mkdirSync(TEST_ROOT, { recursive: true });
const work = mkdtempSync(join(TEST_ROOT, "bam-"));
let server: Awaited<ReturnType<typeof startS3Server>> | undefined;
let proxy: Awaited<ReturnType<typeof startFaultProxy>> | undefined;
const dir = daemonDir("bam");
try {
  // 1. The BAM and its index.
  const local = join(work, "sample.bam");
  const tGen = performance.now();
  await sh(`set -o pipefail; python3 '${join(import.meta.dir, "lib", "make-bam.py")}' --mib ${argv.mib} --seed ${SEED} | ${SAMTOOLS} view -b -o '${local}' - && ${SAMTOOLS} index '${local}'`, { timeoutS: 3600 });
  const bamSize = statSync(local).size;
  const baiSize = statSync(`${local}.bai`).size;
  const reads = countOf((await sh(`${SAMTOOLS} idxstats '${local}' | awk '{ n += $3 } END { print n }'`)).out);
  const chroms = (await sh(`${SAMTOOLS} view -H '${local}'`)).out
    .split("\n")
    .filter((l) => l.startsWith("@SQ"))
    .map((l) => ({ name: /\tSN:(\S+)/.exec(l)![1]!, len: Number(/\tLN:(\d+)/.exec(l)![1]) }));
  const genS = (performance.now() - tGen) / 1000;

  // 2. The regions, and what samtools reads for them on the local file.
  const rand = rng(SEED);
  const regions = Array.from({ length: PROCS }, () => {
    const c = chroms[Math.floor(rand() * chroms.length)]!;
    const a = 1 + Math.floor(rand() * (c.len - SPAN));
    return `${c.name}:${a}-${a + SPAN - 1}`;
  });
  // Each query under strace: the bytes samtools reads of each file and where, as on a local disk.
  const localRuns = await Promise.all(
    regions.map(async (r, i) => {
      const log = join(work, `strace-${i}.log`);
      const out = await sh(`strace -qq -y -s 0 -e trace=openat,lseek,read,pread64 -o '${log}' ${SAMTOOLS} view -c '${local}' ${r}`);
      return { count: countOf(out.out), ...readsOf(await Bun.file(log).text(), local) };
    }),
  );
  const want = localRuns.map((o) => o.count);
  if (want.some((n) => n === 0)) throw new Error(`a region has no reads on the local BAM (${regions.join(" ")}): nothing would be checked`);
  const sum = (f: (b: Map<string, number>) => number): number => localRuns.reduce((n, o) => n + f(o.bytes), 0);
  const bamRead = sum((b) => b.get(local) ?? 0);
  const baiRead = sum((b) => b.get(`${local}.bai`) ?? 0);
  const allRead = sum((b) => [...b.values()].reduce((x, y) => x + y, 0));
  const allRanges = localRuns.flatMap((o) => o.ranges);
  const blocks = unitsTouched(allRanges, BLOCK);
  const parts = unitsTouched(allRanges, PART);
  if (bamRead === 0 || baiRead === 0) throw new Error("strace saw no read of the BAM or of its index: the baseline would be wrong");
  say(`real BAM: ${PROCS} × \`samtools view -c\` of ${SPAN / 1000} kbp regions (seed ${SEED}), at once, on a ` +
    `${fmtNum(bamSize / MiB, 1)} MiB coordinate-sorted BAM (${reads.toLocaleString("en")} reads of 100-150 bp on ` +
    `${chroms.map((c) => `${c.name} ${c.len / 1e6} Mbp`).join(", ")}; .bai ${fmtNum(baiSize / 1024, 0)} KiB; made in ${fmtNum(genS, 0)} s); ` +
    `load ${loadavg()}; samtools ${(await sh(`${SAMTOOLS} --version | head -1`)).out.trim().split(" ")[1]}`);
  say(`regions: ${regions.join(" ")}; reads counted: ${want.join(" ")}`);
  say(`baseline, samtools on the local file (strace of read/pread64): the ${PROCS} processes read ${fmtNum(bamRead / 1024, 0)} KiB ` +
    `of the BAM (${fmtNum(bamRead / PROCS / 1024, 0)} KiB each: header, EOF marker, the region's BGZF blocks), ` +
    `${fmtNum(baiRead / MiB, 2)} MiB of the .bai (all of it, each), ${fmtNum(allRead / MiB, 2)} MiB in all (libraries too); ` +
    `the BAM reads touch ${blocks} blocks of 1 MiB, in ${parts} parts of 8 MiB`);
  // 3. Upload as users' tools do.
  server = await startS3Server();
  proxy = await startFaultProxy(server);
  const s3 = s3tool(server);
  await s3.mkbucket(BUCKET);
  for (const o of OBJECTS) {
    const up = await s3.uploadFile(BUCKET, o.key, local, { checksums: o.checksums, python: argv.python });
    await s3.uploadFile(BUCKET, `${o.key}.bai`, `${local}.bai`, { checksums: o.checksums, python: argv.python });
    const bam = await s3.checksums(BUCKET, o.key);
    const bai = await s3.checksums(BUCKET, `${o.key}.bai`);
    if (bam.size !== bamSize || bai.size !== baiSize) throw new Error(`${o.key}: uploaded sizes ${bam.size}/${bai.size}, local ${bamSize}/${baiSize}`);
    say(`${o.key} (${o.what}; boto3 ${up.boto3}, s3transfer ${up.s3transfer}): BAM ${describe(bam)}; .bai ${describe(bai)}`);
  }
  say("");
  say(`| object | round | fetched, MiB | × 1 MiB blocks touched | × 8 MiB parts touched | GETs | time, s (load) |`);
  say("|---|---|---:|---:|---:|---:|---:|");

  // 4. The rounds.
  const round = async (o: (typeof OBJECTS)[number], name: string, mnt: string): Promise<number> => {
    const path = `${mnt}/${o.key}`;
    const gets0 = proxy!.count("GetObject");
    const { r: outs, fetched, s } = await fetchedBy(proxy!, () =>
      Promise.all(regions.map((r) => sh(`${SAMTOOLS} view -c '${path}' ${r}`, { timeoutS: 900 }))),
    );
    const gets = proxy!.count("GetObject") - gets0;
    outs.forEach((out, i) => {
      const got = countOf(out.out);
      if (got !== want[i]) throw new Error(`${o.key} ${name}: samtools view -c ${regions[i]} counted ${got} reads through the mount, ${want[i]} on the local BAM`);
    });
    say(`| ${o.what} | ${name} | ${fmtNum(fetched / MiB, 1)} | ${fmtNum(fetched / (blocks * BLOCK), 2)} | ${fmtNum(fetched / (parts * PART), 2)} | ${gets} | ${fmtNum(s, 2)} (${loadavg().split(" ")[0]}) |`);
    return fetched;
  };
  const [dflt, etag] = await threeRounds({ server, proxy, bucket: BUCKET, dir, objects: OBJECTS, round });
  say("");
  const [d1, d2, d3] = dflt!;
  const [e1] = etag!;
  const met = (ok: boolean): string => (ok ? "met" : "NOT met");
  say(`targets (issue 21; round 1 includes the .bai, ${fmtNum(baiSize / 1024, 0)} KiB, one GET): defaults, round 1 ≤ 2× the parts touched: ${met(d1! <= 2 * parts * PART)}` +
    ` (if its checksum is composite: the run prints it above); rounds 2 and 3 fetch 0 bytes: ${met(d2 === 0)}, ${met(d3 === 0)}; ` +
    `ETag only, round 1 ≤ 2× the 1 MiB blocks touched: ${met(e1! <= 2 * blocks * BLOCK)} (not kept after a close, so fetched again each round)`);
  say(`every count matched the local BAM's (${PROCS} processes × 3 rounds × ${OBJECTS.length} objects)`);
  if (argv.out) writeFileSync(argv.out, lines.join("\n") + "\n");
} finally {
  removeDir(dir);
  await proxy?.stop();
  await server?.stop();
  rmSync(work, { recursive: true, force: true });
}
process.exit(0);
