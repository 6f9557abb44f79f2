export function Traces(_props: Record<string, unknown>) { return <p>Traces</p>; }
