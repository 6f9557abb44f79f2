export function Prices(_props: Record<string, unknown>) { return <p>Prices</p>; }
