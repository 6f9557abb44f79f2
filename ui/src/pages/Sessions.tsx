export function Sessions() { return <p>Sessions</p>; }
export function SessionView(_p: { session: string }) { return <p>Session</p>; }
