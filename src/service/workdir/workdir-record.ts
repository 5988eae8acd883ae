/**
 * Commit records against S3 and the local workdir: reading the latest record, building the next
 * one from the workdir and the journal, and writing it.
 *
 * Is: the I/O around `commit-record.ts` (which only decides): `loadLatestRecord` (GET and
 * parse; an unreadable record is reported and treated as absent, which only ever makes
 * prefetch fetch more), `recordFromWorkdir` (every regular file with the ETag its journal
 * baseline holds, markers by size, symlinks with their targets, empty directories) and
 * `writeRecord` (`If-None-Match: *` on the next sequence key: two writers can never both
 * write sequence N).
 * Is not: the upload or the prefetch engine; they call this at their one hook each.
 */
import { readlinkSync } from "node:fs";
import { basename } from "node:path";
import type { ObjectStore } from "../../store/types.ts";
import { StoreError } from "../../store/types.ts";
import { errMsg, type Logger } from "../../util/log.ts";
import { latestRecordKey, parseRecord, recordKey, type CommitRecord, type RecordFile } from "./commit-record.ts";
import type { WorkdirJournal, WorkdirVisit } from "./journal.ts";

type RecordStore = Pick<ObjectStore, "bucket" | "getSmall" | "putSmall">;

/** The latest record among `keys` (keys seen under the prefix), or null. Never throws for a bad record. */
export async function loadLatestRecord(
  store: RecordStore, prefix: string, keys: Iterable<string>, log: Logger, signal?: AbortSignal,
): Promise<CommitRecord | null> {
  const latest = latestRecordKey(prefix, keys);
  if (latest === null) return null;
  const got = await store.getSmall(latest.key, signal);
  if (got === null) return null;
  try {
    const rec = parseRecord(got.body, prefix);
    if (rec.seq !== latest.seq) throw new Error(`holds seq ${rec.seq}`);
    return rec;
  } catch (err) {
    log.warn(`ignoring commit record s3://${store.bucket}/${latest.key}: ${errMsg(err)}; prefetch restores every object, no symlinks or empty directories`);
    return null;
  }
}

/**
 * The next record's content from a walk of the workdir taken after the files were uploaded
 * (entry by entry: the walk's entries are never all held; `buildRecord` sorts).
 */
export function recordFromWorkdir(
  walk: WorkdirVisit, journal: WorkdirJournal, lastUploadFile: string, log: Logger,
): Pick<CommitRecord, "files" | "symlinks" | "dirs"> & { names: NonNullable<CommitRecord["names"]> } {
  const files: RecordFile[] = [];
  const symlinks: CommitRecord["symlinks"] = [];
  const rest = walk((e) => {
    const mtimeMs = Number(e.stamp.mtimeNs / 1_000_000n);
    if (e.kind === "file") {
      if (basename(e.rel) === lastUploadFile) {
        files.push({ path: e.rel, size: e.stamp.size, mtimeMs, mode: e.mode & 0o7777, etag: "", marker: true });
        return;
      }
      const base = journal.get(e.rel);
      if (base === null) {
        log.warn(`commit record: ${e.rel} has no uploaded version; left out of the record`);
        return;
      }
      const crc64nvme = journal.checksumOf(e.rel, base.etag);
      files.push({ path: e.rel, size: e.stamp.size, mtimeMs, mode: e.mode & 0o7777, etag: base.etag, ...(crc64nvme ? { crc64nvme } : {}) });
    } else if (e.kind === "symlink") {
      try {
        symlinks.push({ path: e.rel, target: readlinkSync(e.abs, "utf8") });
      } catch (err) {
        log.warn(`commit record: cannot read symlink ${e.rel}: ${errMsg(err)}`);
      }
    }
  });
  return { files, symlinks, dirs: [...rest.emptyDirs], names: rest.names };
}

/** Writes `rec` under its sequence key, only if no record with that sequence exists. */
export async function writeRecord(store: RecordStore, rec: CommitRecord, signal?: AbortSignal): Promise<string> {
  const key = recordKey(rec.prefix, rec.seq);
  try {
    await store.putSmall(key, new TextEncoder().encode(JSON.stringify(rec)), { ifNoneMatch: true }, signal);
  } catch (err) {
    if (err instanceof StoreError && err.kind === "precondition") {
      throw new StoreError("precondition", `commit record s3://${store.bucket}/${key} already exists: another bucketfs wrote to this workdir since this one started`, { cause: err });
    }
    throw err;
  }
  return key;
}

