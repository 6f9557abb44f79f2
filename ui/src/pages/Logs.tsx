export function Logs(_props: Record<string, unknown>) { return <p>Logs</p>; }
