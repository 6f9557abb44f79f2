export function Budgets(_props: Record<string, unknown>) { return <p>Budgets</p>; }
