// Time-series charts with uPlot: lines, or stacked areas (each series drawn
// on the sum of those below it, its own value in the legend). Times on the
// axis are in the browser's zone; the legend shows exact values.

import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#b07aa1', '#edc948', '#ff9da7', '#9c755f', '#8cd17d', '#bab0ac'];

export interface Series {
  label: string;
  values: (number | null)[];
  color?: string;
}

interface ChartProps {
  /** Unix ms of each point. */
  times: number[];
  series: Series[];
  stacked?: boolean;
  height?: number;
  /** Formats a value for the axis and the legend. */
  format: (v: number | null) => string;
  label: string;
}

function cssVar(name: string, fallback: string): string {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

export function Chart({ times, series, stacked = false, height = 220, format, label }: ChartProps) {
  const host = useRef<HTMLDivElement>(null);
  const dark = useDarkScheme();
  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const axisColor = cssVar('--muted', '#666');
    const gridColor = cssVar('--grid', '#8883');
    const raw = series.map((s) => s.values);
    let data: (number | null)[][] = raw;
    if (stacked) {
      const sums = times.map(() => 0);
      data = raw.map((values) => values.map((v, i) => (sums[i] += v ?? 0)));
    }
    // Stacked: draw the top band first so each lower one is painted over it.
    const order = stacked ? series.map((_, i) => series.length - 1 - i) : series.map((_, i) => i);
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height,
      legend: { live: true },
      cursor: { points: { size: 6 } },
      scales: { x: { time: true } },
      axes: [
        { stroke: axisColor, grid: { stroke: gridColor, width: 1 }, ticks: { stroke: gridColor } },
        { stroke: axisColor, grid: { stroke: gridColor, width: 1 }, ticks: { stroke: gridColor }, size: 70, values: (_u, vals) => vals.map((v) => format(v)) },
      ],
      series: [
        { label: 'Time' },
        ...order.map((i) => {
          const color = series[i].color ?? PALETTE[i % PALETTE.length];
          return {
            label: series[i].label,
            stroke: color,
            width: 1.5,
            fill: stacked ? color + '99' : undefined,
            value: (_u: uPlot, _v: number | null, _si: number, idx: number | null) => (idx == null ? '—' : format(raw[i][idx] ?? null)),
          };
        }),
      ],
    };
    const aligned = [times.map((t) => t / 1000), ...order.map((i) => data[i])] as uPlot.AlignedData;
    const chart = new uPlot(opts, aligned, el);
    const resize = new ResizeObserver(() => chart.setSize({ width: Math.max(200, el.clientWidth), height }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      chart.destroy();
    };
    // Colours come from CSS at creation: a theme change rebuilds the chart.
  }, [times, series, stacked, height, format, dark]);
  return <div class="chart" ref={host} role="img" aria-label={label} />;
}

/** Whether the system asks for dark colours, following its changes. */
function useDarkScheme(): boolean {
  const query = '(prefers-color-scheme: dark)';
  const [dark, setDark] = useState(() => window.matchMedia(query).matches);
  useEffect(() => {
    const m = window.matchMedia(query);
    const on = () => setDark(m.matches);
    m.addEventListener('change', on);
    return () => m.removeEventListener('change', on);
  }, []);
  return dark;
}
