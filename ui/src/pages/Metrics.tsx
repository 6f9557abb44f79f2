export function Metrics(_props: Record<string, unknown>) { return <p>Metrics</p>; }
