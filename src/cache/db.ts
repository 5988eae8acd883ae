/**
 * Opens the per-bucket sqlite index (`<cachepath>/.<bucket>.index`).
 *
 * Is: the one place that opens the database and sets its pragmas (WAL, busy timeout).
 * Is not: a schema owner. Each module that keeps state in the index (the metadata index,
 * the workdir baseline/journal) creates its own tables with `CREATE TABLE IF NOT EXISTS`.
 */
import { Database } from "bun:sqlite";

export function openIndex(path: string): Database {
  const db = new Database(path, { create: true, strict: true });
  db.run("PRAGMA journal_mode = WAL");
  // NORMAL in WAL mode: a power loss can lose the last commits but never corrupts the file.
  // Losing a baseline row only makes a file look dirty again (re-uploaded), never lost.
  db.run("PRAGMA synchronous = NORMAL");
  db.run("PRAGMA busy_timeout = 5000");
  return db;
}
