/**
 * Result model of the benchmark and its rendering: one table (markdown, printed and written
 * to bench/results/latest.md) with absolute figures, the "bucketfs advantage" over the faster
 * peer (always oriented so that > 1 means bucketfs is better), the target and whether
 * it is met; plus a JSON file the chart script (bench/chart.py) draws from.
 *
 * Is: pure data shaping and formatting. Is not: measurement.
 */
import { fmtNum } from "./util.ts";

export type Col = "bucketfs" | "s3fs" | "rclone" | "local";
export const PEERS = ["s3fs", "rclone"] as const;

export interface Cell {
  /** The reported figure (median of the samples); null = did not finish. */
  value: number | null;
  /** Every sample (null entries = did not finish). */
  samples: Array<number | null>;
  /** Shown instead of the number when set (e.g. "DNF (wait: 27.1)"). */
  text?: string;
  /** Figure used to pick the faster peer when `value` is null (e.g. rclone when allowed to finish). */
  compareValue?: number;
  /** Set when the measurement failed. */
  error?: string;
}

export type Target =
  /** bucketfs advantage over the faster peer must be at least `factor`. */
  | { kind: "peer"; factor: number; text: string }
  /** bucketfs / local must be at least `factor` (higher-is-better metrics). */
  | { kind: "local"; factor: number; text: string }
  /** bucketfs must be below `max`. */
  | { kind: "max"; max: number; text: string };

export interface Row {
  id: string;
  metric: string;
  unit: string;
  better: "higher" | "lower";
  cells: Partial<Record<Col, Cell>>;
  target?: Target;
  /** Short remark printed under the table. */
  note?: string;
  /** Additional labelled bars for the chart (e.g. the two raw-GET references). */
  extraBars?: Array<{ label: string; value: number }>;
}

export function cellOf(samples: Array<number | null>, extra: Partial<Cell> = {}): Cell {
  const nums = samples.filter((x): x is number => x !== null && Number.isFinite(x));
  let value: number | null = null;
  if (nums.length > 0 && nums.length === samples.length) {
    const s = [...nums].sort((a, b) => a - b);
    const m = Math.floor(s.length / 2);
    value = s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
  }
  return { value, samples, ...extra };
}

export function errorCell(e: unknown): Cell {
  const msg = e instanceof Error ? e.message : String(e);
  return { value: null, samples: [], text: "ERR", error: msg.split("\n")[0]?.slice(0, 200) ?? "error" };
}

function comparable(c: Cell | undefined): number | undefined {
  if (!c || c.error) return undefined;
  if (c.value !== null) return c.value;
  return c.compareValue;
}

/** The faster peer's figure and name (DNF peers count with their compareValue, if any). */
export function fasterPeer(row: Row): { name: string; value: number } | undefined {
  let best: { name: string; value: number } | undefined;
  for (const p of PEERS) {
    const v = comparable(row.cells[p]);
    if (v === undefined) continue;
    if (!best || (row.better === "higher" ? v > best.value : v < best.value)) best = { name: p, value: v };
  }
  return best;
}

/** bucketfs vs the faster peer, oriented so that > 1 means bucketfs is better. */
export function advantage(row: Row): number | undefined {
  const b = row.cells.bucketfs;
  if (!b || b.value === null || b.error) return undefined;
  const p = fasterPeer(row);
  if (!p) {
    // Every peer failed to finish while bucketfs did.
    const anyDnf = PEERS.some((n) => row.cells[n] && row.cells[n]?.value === null && !row.cells[n]?.error);
    return anyDnf ? Number.POSITIVE_INFINITY : undefined;
  }
  if (b.value === 0 || p.value === 0) return undefined;
  return row.better === "higher" ? b.value / p.value : p.value / b.value;
}

export function targetMet(row: Row): boolean | undefined {
  const t = row.target;
  const b = row.cells.bucketfs;
  if (!t || !b || b.value === null || b.error) return t ? false : undefined;
  switch (t.kind) {
    case "peer": {
      const a = advantage(row);
      return a === undefined ? undefined : a >= t.factor;
    }
    case "local": {
      const l = row.cells.local?.value;
      if (l === undefined || l === null || l === 0) return undefined;
      return row.better === "higher" ? b.value / l >= t.factor : l / b.value >= t.factor;
    }
    case "max":
      return b.value < t.max;
  }
}

/** The bucketfs figure that would just meet the target (for the chart), if defined. */
export function targetValue(row: Row): number | undefined {
  const t = row.target;
  if (!t) return undefined;
  if (t.kind === "max") return t.max;
  if (t.kind === "local") {
    const l = row.cells.local?.value;
    if (l === undefined || l === null) return undefined;
    return row.better === "higher" ? l * t.factor : l / t.factor;
  }
  const p = fasterPeer(row);
  if (!p) return undefined;
  return row.better === "higher" ? p.value * t.factor : p.value / t.factor;
}

function showCell(c: Cell | undefined): string {
  if (!c) return "—";
  if (c.text) return c.text;
  if (c.value === null) return "DNF";
  return fmtNum(c.value);
}

export function renderTable(rows: Row[]): string {
  const head = [
    "metric",
    "bucketfs",
    "s3fs",
    "rclone",
    "local / ref",
    "bucketfs advantage vs faster peer (>1 = bucketfs better)",
    "target (issue 5)",
    "met",
  ];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`];
  for (const r of rows) {
    const a = advantage(r);
    const p = fasterPeer(r);
    const adv = a === undefined ? "—" : a === Number.POSITIVE_INFINITY ? "∞ (peers DNF)" : `${fmtNum(a, 2)}× (vs ${p?.name ?? "?"})`;
    const met = targetMet(r);
    lines.push(
      `| ${r.metric} (${r.unit}, ${r.better === "higher" ? "↑" : "↓"}) | ${showCell(r.cells.bucketfs)} | ${showCell(r.cells.s3fs)} | ` +
        `${showCell(r.cells.rclone)} | ${showCell(r.cells.local)} | ${adv} | ${r.target?.text ?? "—"} | ` +
        `${r.target ? (met === undefined ? "n/a" : met ? "yes" : "**no**") : "—"} |`,
    );
  }
  return lines.join("\n");
}

/** Every sample per cell, for the details section. */
export function renderSamples(rows: Row[]): string {
  const out: string[] = [];
  for (const r of rows) {
    const parts: string[] = [];
    for (const c of ["bucketfs", "s3fs", "rclone", "local"] as const) {
      const cell = r.cells[c];
      if (!cell) continue;
      if (cell.error) parts.push(`${c}: ERROR ${cell.error}`);
      else parts.push(`${c}: [${cell.samples.map((s) => (s === null ? "DNF" : fmtNum(s))).join(", ")}]`);
    }
    out.push(`- **${r.metric}** (${r.unit}): ${parts.join("; ")}`);
  }
  return out.join("\n");
}

export function toJson(rows: Row[]): unknown {
  return rows.map((r) => ({
    id: r.id,
    metric: r.metric,
    unit: r.unit,
    better: r.better,
    target: r.target?.text ?? null,
    targetValue: targetValue(r) ?? null,
    met: targetMet(r) ?? null,
    extraBars: r.extraBars ?? [],
    advantage: (() => {
      const a = advantage(r);
      return a === undefined || !Number.isFinite(a) ? null : a;
    })(),
    cells: Object.fromEntries(
      Object.entries(r.cells).map(([k, c]) => [
        k,
        { value: c.value, text: c.text ?? null, samples: c.samples, compareValue: c.compareValue ?? null, error: c.error ?? null },
      ]),
    ),
  }));
}
