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

/**
 * The first character a person would see in `text`: a whole emoji (with
 * its joiners and modifiers) or letter with its accents, never half of a
 * surrogate pair.
 * @param {string} text
 */
export function firstGrapheme(text) {
  if (!text) return '?';
  if (typeof Intl !== 'undefined' && Intl.Segmenter) {
    const first = new Intl.Segmenter(undefined, { granularity: 'grapheme' }).segment(text)[Symbol.iterator]().next();
    if (!first.done) return first.value.segment;
  }
  return Array.from(text)[0] || '?';
}

/** @param {string} name @param {boolean | null} online */
export function avatar(name, online) {
  return h('span', { class: 'avatar', 'aria-hidden': 'true' }, firstGrapheme(name || '?').toUpperCase(),
    online === null ? null : h('span', { class: `dot${online ? ' online' : ''}` }));
}

/**
 * One row of the chat list.
 * @param {{conv_id: number, name: string, online: boolean | null, last: string, time: number | null,
 *          status: string | null, unread: number, current: boolean, typing: boolean,
 *          muted?: boolean, mentions?: number}} c
 * @param {(id: number) => void} open
 */
export function chatRow(c, open) {
  const label = `${c.name}${c.online ? ', online' : ''}${c.unread ? `, ${c.unread} unread` : ''}`
    + `${c.mentions ? ', you were mentioned' : ''}${c.muted ? ', muted' : ''}`;
  return h('li', null, h('button', {
    class: `chat-item${c.muted ? ' is-muted' : ''}`, type: 'button', 'data-conv': c.conv_id, 'aria-label': label,
    'aria-current': c.current ? 'true' : null, onclick: () => open(c.conv_id),
  },
  avatar(c.name, c.online),
  h('span', { class: 'chat-name' }, c.name),
  h('span', { class: 'chat-time' },
    c.muted ? h('span', { class: 'muted-mark', role: 'img', 'aria-label': 'muted', title: 'Muted' }, '🔕') : null,
    c.time ? listTime(c.time) : ''),
  h('span', { class: 'chat-last' }, c.status ? tick(c.status) : null, c.status ? ' ' : null,
    c.typing ? h('em', null, 'typing…') : c.last),
  h('span', { class: 'badges' },
    c.mentions ? h('span', { class: 'badge mention-badge', 'aria-hidden': 'true', title: 'You were mentioned' }, '@') : null,
    c.unread ? h('span', { class: 'badge', 'aria-hidden': 'true' }, String(c.unread)) : null)));
}

/** The emoji offered by the reaction picker. */
export const REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🎉'];

const MENTION = /(?<![\p{L}\p{N}_.\-@])@([A-Za-z0-9_.\-]*[A-Za-z0-9_])/gu;

/**
 * A message's text as DOM: `@name` mentions become highlighted spans (the
 * current user's own name stands out more); everything else stays text.
 * @param {string} text @param {string} me the current user's name, lower case
 * @returns {(Node | string)[]}
 */
export function withMentions(text, me) {
  /** @type {(Node | string)[]} */
  const out = [];
  let at = 0;
  for (const m of text.matchAll(MENTION)) {
    const i = /** @type {number} */ (m.index);
    if (i > at) out.push(...withLinks(text.slice(at, i)));
    out.push(h('span', { class: `mention${m[1].toLowerCase() === me ? ' mention-me' : ''}` }, m[0]));
    at = i + m[0].length;
  }
  if (at < text.length) out.push(...withLinks(text.slice(at)));
  return out;
}

/** http(s) addresses in a message; trailing punctuation stays text. */
const LINK = /\bhttps?:\/\/[^\s<>"]+[^\s<>".,;:!?)\]'"]/g;

/**
 * `text` with its http(s) addresses as links that open in a new tab,
 * without telling the site where the reader came from. Other schemes
 * (`javascript:`, `data:`) stay plain text.
 * @param {string} text
 * @returns {(Node | string)[]}
 */
export function withLinks(text) {
  /** @type {(Node | string)[]} */
  const out = [];
  let at = 0;
  for (const m of text.matchAll(LINK)) {
    const i = /** @type {number} */ (m.index);
    if (i > at) out.push(text.slice(at, i));
    out.push(h('a', { href: m[0], target: '_blank', rel: 'noopener noreferrer nofollow' }, m[0]));
    at = i + m[0].length;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

/**
 * @typedef {{emoji: string, count: number, mine: boolean, who?: string[]}} Chip
 * @typedef {{seq: number, name: string, text: string, deleted: boolean, loaded: boolean}} Quote
 * @typedef {{kind: 'msg', seq: number | null, cmid: string, sender: number, body: string, at: number,
 *            status: string | null, error?: string, deleted?: boolean, edited?: boolean,
 *            quote?: Quote | null, reactions?: Chip[], mentioned?: boolean, canEdit?: boolean,
 *            canDelete?: boolean, picker?: boolean, opPending?: boolean, flash?: boolean,
 *            retry?: (() => void) | null, copy?: (() => void) | null, discard?: (() => void) | null}
 *           | {kind: 'event', text: string, at: number}} Item
 */

/**
 * @typedef {{me: number, meName: string, group: boolean, name: (id: number) => string,
 *            details: (seq: number) => void, reply: (seq: number) => void, edit: (seq: number) => void,
 *            del: (seq: number) => void, react: (seq: number, emoji: string, add: boolean) => void,
 *            picker: (seq: number | null) => void, edits: (seq: number) => void,
 *            jump: (seq: number) => void}} TimelineCtx
 */

/** A small action button of a message. @param {string} key @param {string} label @param {string} glyph @param {() => void} onclick @param {string} [cls] */
function action(key, label, glyph, onclick, cls) {
  return h('button', { type: 'button', class: `act${cls ? ` ${cls}` : ''}`, 'data-key': key, 'aria-label': label, title: label, onclick },
    h('span', { 'aria-hidden': 'true' }, glyph));
}

/** A message action labelled in words (rare choices, no glyph to learn). */
function textAction(key, label, onclick, cls) {
  return h('button', { type: 'button', class: `act text${cls ? ` ${cls}` : ''}`, 'data-key': key, 'aria-label': label, onclick }, label);
}

/**
 * The quote block of a reply: who wrote the quoted message and its
 * beginning, or that it was deleted; a click shows it.
 * @param {Extract<Item, {kind: 'msg'}>} it @param {TimelineCtx} ctx
 */
function quotePart(it, ctx) {
  const q = it.quote;
  if (!q || it.deleted) return null;
  const label = q.deleted ? `Reply to a deleted message of ${q.name}` : `Reply to ${q.name}: ${q.text}`;
  return h('button', {
    type: 'button', class: `quote${q.deleted ? ' gone' : ''}`, 'data-key': `${it.seq ?? it.cmid}:quote`, 'aria-label': label,
    title: q.loaded ? 'Show the message' : null, onclick: () => ctx.jump(q.seq),
  },
  h('span', { class: 'quote-who' }, q.name),
  h('span', { class: 'quote-text' }, q.deleted ? 'deleted message' : q.text));
}

/**
 * The parts of a message after its meta line: text or tombstone,
 * reactions, actions and the reaction picker.
 * @param {Extract<Item, {kind: 'msg'}>} it @param {TimelineCtx} ctx
 */
function messageParts(it, ctx) {
  const seq = it.seq;
  const parts = [];
  if (it.deleted) {
    parts.push(h('span', { class: 'tombstone' }, 'This message was deleted'));
    return parts;
  }
  parts.push(h('span', { class: 'body' }, ...withMentions(it.body, ctx.meName)));
  if (it.error) parts.push(h('span', { class: 'error small', role: 'alert' }, ` (not sent: ${it.error})`));
  if (it.retry) {
    // A failed message: send it again, copy its text, or let it go.
    parts.push(h('div', { class: 'actions failed-actions', role: 'group', 'aria-label': 'Message not sent' },
      textAction(`${it.cmid}:retry`, 'Retry', it.retry),
      textAction(`${it.cmid}:copy`, 'Copy', it.copy || (() => {})),
      textAction(`${it.cmid}:discard`, 'Discard', it.discard || (() => {}), 'danger')));
  }
  if (seq === null) return parts;
  if (it.reactions && it.reactions.length) {
    parts.push(h('div', { class: 'reactions', role: 'group', 'aria-label': 'Reactions' },
      ...it.reactions.map((r) => h('button', {
        type: 'button', class: `chip${r.mine ? ' mine' : ''}`, 'data-key': `${seq}:rx:${r.emoji}`, 'data-emoji': r.emoji,
        'aria-pressed': r.mine ? 'true' : 'false',
        title: `${r.emoji} ${(r.who || []).join(', ')}`,
        'aria-label': `${r.emoji} ${r.count}: ${(r.who || []).join(', ')}${r.mine ? '; remove yours' : '; react'}`,
        onclick: () => ctx.react(seq, r.emoji, !r.mine),
      }, h('span', { class: 'chip-emoji', 'aria-hidden': 'true' }, r.emoji), ` ${r.count}`))));
  }
  parts.push(h('div', { class: 'actions', role: 'group', 'aria-label': 'Message actions' },
    action(`${seq}:reply`, 'Reply', '↩', () => ctx.reply(seq)),
    h('button', {
      type: 'button', class: 'act', 'data-key': `${seq}:react`, 'aria-label': 'React', title: 'React',
      'aria-expanded': it.picker ? 'true' : 'false', onclick: () => ctx.picker(it.picker ? null : seq),
    }, h('span', { 'aria-hidden': 'true' }, '☺')),
    it.canEdit ? action(`${seq}:edit`, 'Edit', '✎', () => ctx.edit(seq)) : null,
    it.canDelete ? action(`${seq}:delete`, 'Delete', '🗑', () => ctx.del(seq), 'danger') : null));
  if (it.picker) {
    const mine = new Set((it.reactions || []).filter((r) => r.mine).map((r) => r.emoji));
    parts.push(h('div', { class: 'picker', role: 'group', 'aria-label': 'Pick a reaction',
      onkeydown: (/** @type {KeyboardEvent} */ ev) => { if (ev.key === 'Escape') { ev.stopPropagation(); ctx.picker(null); } } },
    ...REACTIONS.map((e) => h('button', {
      type: 'button', class: `pick${mine.has(e) ? ' mine' : ''}`, 'data-key': `${seq}:pick:${e}`, 'data-emoji': e,
      'aria-pressed': mine.has(e) ? 'true' : 'false', 'aria-label': `React with ${e}`,
      onclick: () => { ctx.picker(null); ctx.react(seq, e, !mine.has(e)); },
    }, e))));
  }
  return parts;
}

/**
 * The timeline: day separators, messages grouped by sender, events.
 * @param {Item[]} items in display order
 * @param {TimelineCtx} ctx
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
    const status = it.opPending && mine ? 'pending' : it.status;
    const meta = [clock(it.at), status && mine ? ' ' : null, status && mine ? tick(status) : null];
    const metaEl = mine && ctx.group && it.seq
      ? h('button', { class: 'meta', type: 'button', 'aria-label': `${status}, details`, onclick: () => ctx.details(/** @type {number} */ (it.seq)) }, ...meta)
      : h('span', { class: 'meta' }, ...meta);
    const edited = it.edited && !it.deleted && it.seq !== null
      ? h('button', { type: 'button', class: 'edited', 'data-key': `${it.seq}:edits`, 'aria-label': 'Edited, show the edit history',
        title: 'Show the edit history', onclick: () => ctx.edits(/** @type {number} */ (it.seq)) }, 'edited')
      : null;
    frag.append(h('div', {
      class: `msg${mine ? ' mine' : ''}${first ? ' first' : ''}${it.deleted ? ' deleted' : ''}`
        + `${it.mentioned ? ' mentioned' : ''}${it.flash ? ' flash' : ''}${it.quote && !it.deleted ? ' has-quote' : ''}`,
      'data-seq': it.seq ?? null, 'data-cmid': it.cmid, 'data-key': `msg:${it.cmid}`, 'data-status': mine ? status : null,
      'data-deleted': it.deleted ? 'true' : null, 'data-edited': it.edited ? 'true' : null,
    },
    first && ctx.group && !mine ? h('span', { class: 'who' }, ctx.name(it.sender)) : null,
    quotePart(it, ctx),
    h('span', { class: 'meta-wrap' }, edited, metaEl),
    ...messageParts(it, ctx)));
  }
  return frag;
}

/**
 * One message search result: where, who, when, and the text with the
 * matching words marked.
 * @param {{conv_id: number, seq: number, sender: string, conv: string, at: number,
 *          fragments: {text: string, match: boolean}[]}} hit
 * @param {() => void} open
 */
export function searchHit(hit, open) {
  const text = hit.fragments.map((f) => f.text).join('');
  return h('li', null, h('button', {
    type: 'button', class: 'hit', 'data-conv': hit.conv_id, 'data-seq': hit.seq,
    'aria-label': `${hit.conv}, ${hit.sender}, ${listTime(hit.at)}: ${text}`, onclick: open,
  },
  h('span', { class: 'hit-head' },
    h('span', { class: 'hit-conv' }, hit.conv),
    h('time', { class: 'hit-time', datetime: new Date(hit.at).toISOString() }, listTime(hit.at))),
  h('span', { class: 'hit-text' },
    h('span', { class: 'hit-who' }, `${hit.sender}: `),
    ...hit.fragments.map((f) => (f.match ? h('mark', null, f.text) : f.text)))));
}
