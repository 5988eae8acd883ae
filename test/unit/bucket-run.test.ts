import { describe, expect, test } from "bun:test";
import {
  cachedFilesUntrusted, combinedExitCode, EVENTS, exitCodeOf, TRANSITIONS, type Phase, type RunEvent,
} from "../../src/service/bucket-run.ts";

const PHASES = Object.keys(TRANSITIONS) as Phase[];
const accepted = (event: RunEvent) => PHASES.filter((p) => EVENTS[p][event] === true);

describe("bucket run: the event table", () => {
  test("sync is accepted only while serving; every refusal says why", () => {
    expect(accepted("sync")).toEqual(["serving"]);
    for (const p of PHASES) if (p !== "serving") expect(typeof EVENTS[p].sync).toBe("string");
    expect(EVENTS.uploading.sync).toContain("stopping");
    expect(EVENTS.syncing.sync).toContain("already");
  });

  test("stop is accepted until the stop has begun (then: already stopping)", () => {
    expect(accepted("stop")).toEqual(["preparing", "prefetching", "recovering", "mounting", "serving", "syncing"]);
    expect(EVENTS.stopping.stop).toBe("already stopping");
  });

  test("abort is accepted wherever work can be cut (prefetch, recovery, sync, the stop's upload), not while idle or done", () => {
    expect(accepted("abort")).toEqual(["preparing", "prefetching", "recovering", "mounting", "syncing", "stopping", "uploading"]);
  });
});

describe("bucket run: transitions", () => {
  test("closed and failed are final; serving and syncing alternate", () => {
    expect(TRANSITIONS.closed).toEqual([]);
    expect(TRANSITIONS.failed).toEqual([]);
    expect(TRANSITIONS.serving).toContain("syncing");
    expect(TRANSITIONS.syncing).toContain("serving");
  });

  test("every phase is reachable from preparing, and every phase reaches closed or failed", () => {
    const seen = new Set<Phase>(["preparing"]);
    const todo: Phase[] = ["preparing"];
    while (todo.length) for (const n of TRANSITIONS[todo.pop()!]) if (!seen.has(n)) (seen.add(n), todo.push(n));
    expect([...seen].sort()).toEqual([...PHASES].sort());
    const ends = (p: Phase, path = new Set<Phase>()): boolean =>
      p === "closed" || p === "failed" || TRANSITIONS[p].some((n) => !path.has(n) && ends(n, new Set([...path, p])));
    for (const p of PHASES) expect({ p, ends: ends(p) }).toEqual({ p, ends: true });
  });

  test("nothing fails once serving: the stop of a mounted bucket always ends closed", () => {
    for (const p of ["serving", "syncing", "stopping", "uploading"] as Phase[]) expect(TRANSITIONS[p]).not.toContain("failed");
  });
});

describe("bucket run: exit codes from final states", () => {
  test("closed and complete 0, closed with files pending 2, failed 1", () => {
    expect(exitCodeOf("closed", true)).toBe(0);
    expect(exitCodeOf("closed", false)).toBe(2);
    expect(exitCodeOf("failed", true)).toBe(1);
    expect(exitCodeOf("failed", false)).toBe(1);
  });

  test("the process: a failed start wins over pending files", () => {
    expect(combinedExitCode([0, 0])).toBe(0);
    expect(combinedExitCode([0, 2])).toBe(2);
    expect(combinedExitCode([2, 1, 0])).toBe(1);
    expect(combinedExitCode([])).toBe(0);
  });
});

describe("bucket run: cached objects across runs (no fsync per object)", () => {
  test("same boot after a crash: kept (the page cache survived)", () => {
    expect(cachedFilesUntrusted({ bootId: "boot-1", cacheSynced: false }, "boot-1")).toBe(false);
  });
  test("new boot after a clean, synced stop: kept", () => {
    expect(cachedFilesUntrusted({ bootId: "boot-1", cacheSynced: true }, "boot-2")).toBe(false);
  });
  test("new boot without a synced stop (power loss): forgotten, fetched again", () => {
    expect(cachedFilesUntrusted({ bootId: "boot-1", cacheSynced: false }, "boot-2")).toBe(true);
  });
  test("first run: nothing to forget", () => {
    expect(cachedFilesUntrusted(undefined, "boot-1")).toBe(false);
  });
});
