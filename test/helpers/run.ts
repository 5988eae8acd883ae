/**
 * Runs commands for integration tests in child processes under coreutils `timeout` (which
 * signals the whole process group, so a command stuck on a mount dies too), never blocking
 * the test's event loop.
 *
 * Is: spawn + capture + timeout. Is not: a shell-quoting library beyond `q`.
 */
export interface RunResult {
  code: number;
  out: string;
  err: string;
}

export interface RunOptions {
  timeoutMs?: number;
  cwd?: string;
  /** Added to the test's environment. */
  env?: Record<string, string>;
}

/** Run argv; rejects only on a timeout (the exit code is in the result). */
export async function runArgv(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const secs = String(Math.ceil(timeoutMs / 1000));
  const p = Bun.spawn(["timeout", "-k", "5", secs, ...argv], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    cwd: opts.cwd,
    env: { ...(process.env as Record<string, string>), LC_ALL: "C", ...opts.env },
  });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code === 124 || code === 137) throw new Error(`timed out after ${timeoutMs} ms: ${argv.join(" ")}\n${err.slice(-3000)}`);
  return { code, out, err };
}

/** Run a bash command line (see runArgv). */
export function run(cmd: string, opts: RunOptions = {}): Promise<RunResult> {
  return runArgv(["bash", "-c", cmd], opts);
}

/** `run`, failing with its output unless it exits 0; returns stdout. */
export async function ok(cmd: string, opts: RunOptions = {}): Promise<string> {
  const r = await run(cmd, opts);
  if (r.code !== 0) throw new Error(`command failed (exit ${r.code}): ${cmd}\n${r.out.slice(-3000)}\n${r.err.slice(-3000)}`);
  return r.out;
}

/** Single-quote for bash. */
export const q = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;
