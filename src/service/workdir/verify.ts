/**
 * `bucketfs verify`: checks, from any machine with the config, that S3 still holds what the
 * latest commit record of each workdir says was uploaded.
 *
 * Is: for every bucket with a workdir, one listing of the prefix, the latest record, a HEAD
 * (checksum mode) of each file the record gives a CRC64NVME for, and the comparison
 * (`verifyRecord`): a missing object, another size, another ETag, another checksum. Exit 0 when every
 * workdir matches, 1 when any differs (each difference is printed), 2 when a workdir cannot be
 * verified (no record, an unreadable record, S3 errors).
 * Is not: a repair, and not a check of the local cache; it never mounts, writes or deletes.
 */
import type { Config } from "../../config/types.ts";
import { createS3Store } from "../../store/s3.ts";
import type { ObjectInfo, ObjectStore } from "../../store/types.ts";
import { runAll } from "../../util/async.ts";
import { errMsg, logger } from "../../util/log.ts";
import { isReservedPath, verifyRecord, type VerifiedObject, type VerifyDifference } from "./commit-record.ts";
import { loadLatestRecord } from "./workdir-record.ts";

export interface VerifyResult {
  bucket: string;
  prefix: string;
  /** "ok", "differs", or "unverifiable" (with `error`). */
  outcome: "ok" | "differs" | "unverifiable";
  record?: { seq: number; runId: string; node: string; createdMs: number; files: number };
  /** Files whose full-object CRC64NVME was compared (the record and S3 both had one). */
  checksums?: number;
  differences: VerifyDifference[];
  error?: string;
}

/** Verifies one workdir prefix of one store. */
export async function verifyWorkdir(store: ObjectStore, prefix: string): Promise<VerifyResult> {
  const res: VerifyResult = { bucket: store.bucket, prefix, outcome: "unverifiable", differences: [] };
  try {
    const objects: ObjectInfo[] = [];
    const reserved: string[] = [];
    for await (const o of store.listAll(prefix)) {
      if (!o.key.startsWith(prefix)) continue;
      if (isReservedPath(o.key.slice(prefix.length))) reserved.push(o.key);
      else objects.push(o);
    }
    const rec = await loadLatestRecord(store, prefix, reserved, logger(store.bucket));
    if (rec === null) {
      res.error = `no readable commit record under s3://${store.bucket}/${prefix}.bucketfs/commits/`;
      return res;
    }
    res.record = { seq: rec.seq, runId: rec.runId, node: rec.node, createdMs: rec.createdMs, files: rec.files.length };
    // The checksum of each recorded file S3 still holds at the recorded ETag (HEAD, checksum mode).
    const byKey = new Map<string, VerifiedObject>(objects.map((o) => [o.key, { key: o.key, size: o.size, etag: o.etag }]));
    const withSum = rec.files.filter((f) => f.crc64nvme !== undefined && byKey.get(prefix + f.path)?.etag === f.etag);
    let compared = 0;
    await runAll(withSum, 8, async (f) => {
      const i = await store.integrity(prefix + f.path);
      const o = byKey.get(prefix + f.path)!;
      if (i?.etag === f.etag && i.checksum?.algorithm === "crc64nvme" && i.checksum.type === "FULL_OBJECT") {
        o.crc64nvme = i.checksum.value;
        compared++;
      }
    });
    res.checksums = compared;
    res.differences = verifyRecord(rec, byKey.values());
    res.outcome = res.differences.length === 0 ? "ok" : "differs";
  } catch (err) {
    res.error = errMsg(err);
  }
  return res;
}

/** The `verify` command: prints a report per workdir; returns the exit code. */
export async function runVerify(config: Config, opts: { json?: boolean } = {}): Promise<number> {
  const results: VerifyResult[] = [];
  for (const b of config.buckets) {
    if (b.workdir === undefined) continue;
    results.push(await verifyWorkdir(createS3Store(b), `${b.workdir}/`));
  }
  if (opts.json) console.log(JSON.stringify({ results }, null, 2));
  else {
    if (results.length === 0) console.log("no bucket of the config has a workdir: nothing to verify");
    for (const r of results) {
      const where = `s3://${r.bucket}/${r.prefix}`;
      if (r.outcome === "unverifiable") {
        console.log(`${where}: CANNOT VERIFY: ${r.error}`);
        continue;
      }
      const rec = r.record!;
      const head = `${where}: commit record ${rec.seq} (run ${rec.runId} on ${rec.node}, ${new Date(rec.createdMs).toISOString()}, ${rec.files} files, ${r.checksums ?? 0} CRC64NVME checksums compared)`;
      if (r.outcome === "ok") console.log(`${head}: OK`);
      else {
        console.log(`${head}: ${r.differences.length} DIFFERENCE(S)`);
        for (const d of r.differences) console.log(`  ${d.problem.toUpperCase()} ${r.prefix}${d.path}: expected ${d.expected}, S3 has ${d.actual}`);
      }
    }
  }
  if (results.some((r) => r.outcome === "unverifiable")) return 2;
  return results.some((r) => r.outcome === "differs") ? 1 : 0;
}
