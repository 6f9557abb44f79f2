export function Latency(_props: Record<string, unknown>) { return <p>Latency</p>; }
