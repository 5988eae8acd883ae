/**
 * A full disk under the index is a fact to remember, not an exception: the stop must upload
 * everything it can even when the journal cannot record it.
 *
 * Is: recognizing SQLITE_FULL / ENOSPC, and `bestEffort`, which runs one index write and
 * counts it as lost instead of throwing when the disk is full. Is not: a retry (the caller's
 * facts are re-derived at the next start: a file without a baseline looks changed).
 */
import type { Database } from "bun:sqlite";

/** A write failed because the disk (or the database) is full. */
export function isDiskFull(err: unknown): boolean {
  if (typeof err !== "object" || err === null) return false;
  const e = err as { code?: unknown; message?: unknown };
  if (e.code === "SQLITE_FULL" || e.code === "ENOSPC" || e.code === "EDQUOT") return true;
  return typeof e.message === "string" && /database or disk is full|No space left on device/i.test(e.message);
}

const fullWrites = new WeakMap<Database, number>();

/**
 * Run a write to the index. A full disk does not throw: the write is counted as lost
 * (`lostWrites`) and undefined is returned. Every caller records facts that the next start
 * can re-derive (a file without a baseline looks changed and is uploaded again).
 */
export function bestEffort<T>(db: Database, write: () => T): T | undefined {
  try {
    return write();
  } catch (err) {
    if (!isDiskFull(err)) throw err;
    fullWrites.set(db, (fullWrites.get(db) ?? 0) + 1);
    return undefined;
  }
}

/** How many writes to this index were lost to a full disk since it was opened. */
export function lostWrites(db: Database): number {
  return fullWrites.get(db) ?? 0;
}
