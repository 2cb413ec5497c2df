// @ts-check
// Building DOM: user text always goes in as text, never as markup.

import { clock, dayKey, dayLabel, listTime } from './format.js';

/**
 * @param {string} tag
 * @param {Record<string, any> | null} [attrs]
 * @param {...(Node | string | null | undefined | false)} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

export const TICKS = { pending: '◔', sent: '✓', delivered: '✓✓', seen: '✓✓', failed: '⚠' };

/** @param {string} status */
export function tick(status) {
  return h('span', { class: 'tick', 'data-status': status, 'aria-label': status, title: status }, TICKS[status] || '');
}

/** @param {string} name @param {boolean | null} online */
export function avatar(name, online) {
  return h('span', { class: 'avatar', 'aria-hidden': 'true' }, (name || '?').slice(0, 1).toUpperCase(),
    online === null ? null : h('span', { class: `dot${online ? ' online' : ''}` }));
}

/**
 * One row of the chat list.
 * @param {{conv_id: number, name: string, online: boolean | null, last: string, time: number | null,
 *          status: string | null, unread: number, current: boolean, typing: boolean}} c
 * @param {(id: number) => void} open
 */
export function chatRow(c, open) {
  const label = `${c.name}${c.online ? ', online' : ''}${c.unread ? `, ${c.unread} unread` : ''}`;
  return h('li', null, h('button', {
    class: 'chat-item', type: 'button', 'data-conv': c.conv_id, 'aria-label': label,
    'aria-current': c.current ? 'true' : null, onclick: () => open(c.conv_id),
  },
  avatar(c.name, c.online),
  h('span', { class: 'chat-name' }, c.name),
  h('span', { class: 'chat-time' }, c.time ? listTime(c.time) : ''),
  h('span', { class: 'chat-last' }, c.status ? tick(c.status) : null, c.status ? ' ' : null,
    c.typing ? h('em', null, 'typing…') : c.last),
  c.unread ? h('span', { class: 'badge', 'aria-hidden': 'true' }, String(c.unread)) : h('span')));
}

/**
 * @typedef {{kind: 'msg', seq: number | null, cmid: string, sender: number, body: string, at: number,
 *            status: string | null, error?: string} | {kind: 'event', text: string, at: number}} Item
 */

/**
 * The timeline: day separators, messages grouped by sender, events.
 * @param {Item[]} items in display order
 * @param {{me: number, group: boolean, name: (id: number) => string, details: (seq: number) => void}} ctx
 * @returns {DocumentFragment}
 */
export function timeline(items, ctx) {
  const frag = document.createDocumentFragment();
  let lastDay = '';
  /** @type {number | null} */
  let lastSender = null;
  let lastAt = 0;
  for (const it of items) {
    const d = dayKey(it.at);
    if (d !== lastDay) {
      frag.append(h('div', { class: 'day', role: 'separator' }, dayLabel(it.at)));
      lastDay = d;
      lastSender = null;
    }
    if (it.kind === 'event') {
      frag.append(h('div', { class: 'event' }, it.text));
      lastSender = null;
      continue;
    }
    const mine = it.sender === ctx.me;
    const first = it.sender !== lastSender || it.at - lastAt > 5 * 60000;
    lastSender = it.sender;
    lastAt = it.at;
    const meta = [clock(it.at), it.status && mine ? ' ' : null, it.status && mine ? tick(it.status) : null];
    const metaEl = mine && ctx.group && it.seq
      ? h('button', { class: 'meta', type: 'button', 'aria-label': `${it.status}, details`, onclick: () => ctx.details(/** @type {number} */ (it.seq)) }, ...meta)
      : h('span', { class: 'meta' }, ...meta);
    frag.append(h('div', {
      class: `msg${mine ? ' mine' : ''}${first ? ' first' : ''}`,
      'data-seq': it.seq ?? null, 'data-cmid': it.cmid, 'data-status': mine ? it.status : null,
    },
    first && ctx.group && !mine ? h('span', { class: 'who' }, ctx.name(it.sender)) : null,
    metaEl,
    it.body,
    it.error ? h('span', { class: 'error small', role: 'alert' }, ` (not sent: ${it.error})`) : null));
  }
  return frag;
}
