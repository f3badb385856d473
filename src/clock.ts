/** A source of the current time in milliseconds since the epoch; services take one so tests can freeze time. */
export type Clock = () => number

export const systemClock: Clock = Date.now
