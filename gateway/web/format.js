// @ts-check
// Times and days for display, in the browser's locale.

const time = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const day = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
const short = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });

/** @param {number} ms */
export const clock = (ms) => time.format(new Date(ms));

/** A day's key (local date), to group messages by day. @param {number} ms */
export const dayKey = (ms) => new Date(ms).toDateString();

/** "Today", "Yesterday" or the date. @param {number} ms */
export function dayLabel(ms) {
  const d = new Date(ms);
  const today = new Date();
  const yesterday = new Date(Date.now() - 86400000);
  if (d.toDateString() === today.toDateString()) return 'Today';
  if (d.toDateString() === yesterday.toDateString()) return 'Yesterday';
  return day.format(d);
}

/** The chat list's time: the clock today, the date otherwise. @param {number} ms */
export function listTime(ms) {
  return dayKey(ms) === dayKey(Date.now()) ? clock(ms) : short.format(new Date(ms));
}

/** "last seen today at 10:04". @param {number | null | undefined} ms */
export function lastSeen(ms) {
  if (!ms) return 'offline';
  const label = dayLabel(ms);
  return `last seen ${label === 'Today' || label === 'Yesterday' ? label.toLowerCase() : label} at ${clock(ms)}`;
}
