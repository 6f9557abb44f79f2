export function TraceView(_props: Record<string, unknown>) { return <p>TraceView</p>; }
