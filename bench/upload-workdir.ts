/**
 * Benchmark: uploadWorkdir of 1,000 × 64 KiB + 2 × 256 MiB files to a local throwaway S3
 * server (MinIO from test/helpers/s3server.ts), then a full prefetch of the same tree into
 * an empty dir. Prints time and MiB/s.
 *
 * Is: a measurement script (loopback only; everything it creates is removed at the end).
 * Is not: a test (it asserts nothing beyond the upload succeeding).
 *
 * Run:  node_modules/.bin/bun bench/upload-workdir.ts
 * Env:  BENCH_CONCURRENCY (default 16), BENCH_SMALL (1000), BENCH_BIG_MIB (256).
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { openIndex } from "../src/cache/db.ts";
import { DEFAULTS } from "../src/config/types.ts";
import { WorkdirJournal } from "../src/service/workdir/journal.ts";
import { prefetchWorkdir, type WorkdirSpec } from "../src/service/workdir/prefetch.ts";
import { uploadWorkdir } from "../src/service/workdir/upload.ts";
import { createS3Store } from "../src/store/s3.ts";
import { logger } from "../src/util/log.ts";
import { startS3Server, TEST_ROOT } from "../test/helpers/s3server.ts";
import { writeRandom } from "../test/helpers/files.ts";

const MiB = 1024 * 1024;
const SMALL_COUNT = Number(process.env.BENCH_SMALL ?? 1000);
const SMALL_BYTES = 64 * 1024;
const BIG_COUNT = 2;
const BIG_BYTES = Number(process.env.BENCH_BIG_MIB ?? 256) * MiB;
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? DEFAULTS.transferConcurrency);
const BUCKET = "bench";
const PREFIX = "workdir/";

const log = logger("bench");
mkdirSync(TEST_ROOT, { recursive: true });
const root = mkdtempSync(join(TEST_ROOT, "bench-upload-"));
const server = await startS3Server();
try {
  await server.createBucket(BUCKET);
  const localDir = join(root, "wd");
  mkdirSync(localDir, { recursive: true });
  for (let i = 0; i < SMALL_COUNT; i++) {
    const dir = join(localDir, "work", (i % 100).toString(16).padStart(2, "0"), `task${Math.floor(i / 10)}`);
    mkdirSync(dir, { recursive: true });
    writeRandom(join(dir, `small${i}.bin`), SMALL_BYTES);
  }
  for (let i = 0; i < BIG_COUNT; i++) writeRandom(join(localDir, `big${i}.bin`), BIG_BYTES);
  const totalBytes = SMALL_COUNT * SMALL_BYTES + BIG_COUNT * BIG_BYTES;

  const store = createS3Store({
    bucket: BUCKET,
    accessKeyId: server.accessKey,
    secretAccessKey: server.secretKey,
    region: server.region,
    endpoint: server.endpoint,
    partSize: DEFAULTS.partSize,
    transferConcurrency: CONCURRENCY,
  });
  const spec: WorkdirSpec = { prefix: PREFIX, localDir, lastUploadFile: ".exitcode", concurrency: CONCURRENCY };
  const journal = new WorkdirJournal(openIndex(join(root, "index.db")), PREFIX);

  const up = await uploadWorkdir(store, journal, spec, log);
  if (!up.ok) throw new Error(`upload failed: ${JSON.stringify(up.failed.slice(0, 5))}`);
  const upMiBs = totalBytes / MiB / up.seconds;

  const spec2: WorkdirSpec = { ...spec, localDir: join(root, "wd2") };
  const journal2 = new WorkdirJournal(openIndex(join(root, "index2.db")), PREFIX);
  const down = await prefetchWorkdir(store, journal2, spec2, log);
  const downMiBs = totalBytes / MiB / down.seconds;

  const files = SMALL_COUNT + BIG_COUNT;
  console.log(
    `\n${server.kind} on loopback, concurrency ${CONCURRENCY}, part size ${DEFAULTS.partSize / MiB} MiB: ` +
      `${files} files, ${(totalBytes / MiB).toFixed(0)} MiB (${SMALL_COUNT} x 64 KiB + ${BIG_COUNT} x ${BIG_BYTES / MiB} MiB)\n` +
      `upload:   ${up.seconds.toFixed(2)} s, ${upMiBs.toFixed(1)} MiB/s, ${(up.uploaded / up.seconds).toFixed(0)} files/s\n` +
      `prefetch: ${down.seconds.toFixed(2)} s, ${downMiBs.toFixed(1)} MiB/s, ${(down.downloaded / down.seconds).toFixed(0)} files/s`,
  );
} finally {
  await server.stop();
  rmSync(root, { recursive: true, force: true });
}
