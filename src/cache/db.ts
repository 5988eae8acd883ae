/**
 * Opens the per-bucket sqlite index (`<cachepath>/.<bucket>.index`) and keeps its schema
 * version (`PRAGMA user_version`).
 *
 * Is: the one place that opens the database (never through a symlink, mode 0600), sets its
 * pragmas (WAL, busy timeout), and migrates an index written by an older bucketfs.
 * Is not: a schema owner for current tables: each module that keeps state in the index
 * (meta-index.ts, runs.ts, the workdir journal) creates its tables with
 * `CREATE TABLE IF NOT EXISTS`; only the steps between versions live here.
 *
 * Versions: 0 = before versioning (a `meta_state` table for the daemon's boot/clean-stop
 * and `wd_runs` for transfers); 1 = one `runs` table replaces both; 2 = `wd_lease` (the
 * workdir lease as the daemon last saw it, for `status`). To change a table,
 * append a step to MIGRATIONS (it runs in the same transaction that bumps user_version).
 */
import { Database } from "bun:sqlite";
import { prepareDbFile } from "./cache-root.ts";
import { RUNS_DDL } from "./runs.ts";

/** The workdir lease as the daemon last saw it (one row per workdir prefix; JSON of LeaseStatus). */
export const WD_LEASE_DDL = `CREATE TABLE IF NOT EXISTS wd_lease (
  scope TEXT PRIMARY KEY, status TEXT NOT NULL, updated_ms INTEGER NOT NULL) WITHOUT ROWID`;

type Migration = (db: Database) => void;

const hasTable = (db: Database, name: string) =>
  db.query<{ n: number }, [string]>("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ?").get(name)!.n > 0;

/** MIGRATIONS[v] takes an index from version v to v + 1. */
const MIGRATIONS: Migration[] = [
  // 0 -> 1: meta_state + wd_runs -> runs.
  (db) => {
    db.run(RUNS_DDL);
    if (hasTable(db, "wd_runs")) {
      db.run(`INSERT INTO runs (kind, scope, started_ms, finished_ms, outcome, files, bytes, failed, message)
              SELECT kind, scope, started_ms, finished_ms, outcome, files, bytes, failed, message FROM wd_runs ORDER BY id`);
      db.run("DROP TABLE wd_runs");
    }
    if (hasTable(db, "meta_state")) {
      const state = (name: string) =>
        db.query<{ value: string }, [string]>("SELECT value FROM meta_state WHERE name = ?").get(name)?.value;
      const boot = state("run_boot");
      if (boot !== undefined) {
        const clean = state("clean_stop") === "1";
        db.query(
          `INSERT INTO runs (kind, phase, boot_id, started_ms, finished_ms, outcome, cache_synced, message)
           VALUES ('daemon', ?, ?, 0, ?, ?, ?, 'recorded by a bucketfs without run history')`,
        ).run(clean ? "closed" : "failed", boot, clean ? 0 : null, clean ? "ok" : "running", clean ? 1 : 0);
      }
      db.run("DROP TABLE meta_state");
    }
  },
  // 1 -> 2: the workdir lease's last known state.
  (db) => db.run(WD_LEASE_DDL),
];

/** The schema version this bucketfs writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;

export class IndexVersionError extends Error {
  override readonly name = "IndexVersionError";
}

/** Bring `db` to SCHEMA_VERSION; returns the version it had. */
export function migrate(db: Database, path: string): number {
  const from = db.query<{ user_version: number }, []>("PRAGMA user_version").get()!.user_version;
  if (from > SCHEMA_VERSION) {
    throw new IndexVersionError(
      `the index ${path} has schema version ${from}, newer than this bucketfs understands (${SCHEMA_VERSION}); ` +
        `run the newer bucketfs, or remove the index to rebuild it (workdir files then look changed and are uploaded again)`,
    );
  }
  if (from === SCHEMA_VERSION) return from;
  db.transaction(() => {
    for (let v = from; v < SCHEMA_VERSION; v++) MIGRATIONS[v]!(db);
    db.run(`PRAGMA user_version = ${SCHEMA_VERSION}`);
  })();
  return from;
}

/**
 * Open (creating if needed) and migrate the index. `readonly` is for `bucketfs status`: no
 * file is created and nothing is migrated (an index of another version is refused).
 */
export function openIndex(path: string, opts: { readonly?: boolean } = {}): Database {
  if (opts.readonly) {
    const db = new Database(path, { readonly: true, strict: true });
    const v = db.query<{ user_version: number }, []>("PRAGMA user_version").get()!.user_version;
    if (v !== SCHEMA_VERSION) {
      db.close();
      throw new IndexVersionError(`the index ${path} has schema version ${v} (this bucketfs: ${SCHEMA_VERSION}); start bucketfs once to migrate it`);
    }
    return db;
  }
  prepareDbFile(path);
  const db = new Database(path, { create: true, strict: true });
  try {
    db.run("PRAGMA journal_mode = WAL");
    // NORMAL in WAL mode: a power loss can lose the last commits but never corrupts the file.
    // Losing a baseline row only makes a file look dirty again (re-uploaded), never lost.
    db.run("PRAGMA synchronous = NORMAL");
    db.run("PRAGMA busy_timeout = 5000");
    migrate(db, path);
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}
