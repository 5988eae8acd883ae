/**
 * Waiting in tests for a condition the test can read in-process (a proxy's counters or log, a
 * daemon's published state, /proc).
 *
 * Is: one poll loop with a deadline and a message naming what was awaited. Is not: a wait on the
 * daemon's status (status.ts `waitStatus` runs the CLI) or on proxy request counts (the fault
 * proxy's own `waitFor`).
 */

/** Resolves once `cond()` holds (polled every 50 ms), or fails after `ms` naming `what`. */
export async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(50);
  }
}
