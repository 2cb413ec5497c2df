// @ts-check
// Parley Web: the reference client of docs/PROTOCOL.md and docs/HTTP.md.
//
// State lives here; view.js builds DOM from it, connection.js keeps the
// WebSocket, outbox.js persists unacknowledged sends and message events
// (edits, deletes, reactions).
//
// Every conversation event has its own seq: `c.msgs` holds every row by
// seq (text messages and the edit/delete/reaction events), the timeline
// shows the text ones, and the events change their target in place.

import { Api, ApiError } from './api.js';
import { Connection } from './connection.js';
import { Outbox } from './outbox.js';
import { h, chatRow, timeline, searchHit } from './view.js';
import { lastSeen, clock, dayLabel } from './format.js';
import * as notify from './notify.js';

const PAGE = 50;
const TYPING_EVERY_MS = 3000;
/** The server's message limit (`limits.max_message_bytes`), in UTF-8
 * bytes: an accented letter takes two, an emoji four. */
const MAX_MESSAGE_BYTES = 4096;
const utf8 = new TextEncoder();
const $ = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));

/** A stable id of this browser installation, sent on /ws (device_id). */
function deviceId() {
  let id = localStorage.getItem('parley.device');
  if (!id || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    id = 'web-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    localStorage.setItem('parley.device', id);
  }
  return id;
}

/** Error codes after which a frame is simply sent again. */
const RETRYABLE = new Set(['rate_limited', 'unavailable', 'internal']);

/**
 * @typedef {{msgs: Map<number, any>, pending: Map<string, any>, ops: Map<string, any>, high: number, oldest: number,
 *   hasMore: boolean, loaded: boolean, loading: boolean, members: any[] | null,
 *   receipts: Map<number, {delivered_seq: number, seen_seq: number}>, metaLoaded: boolean,
 *   events: any[], typing: Map<number, number>, ackedDelivered: number, ackedSeen: number,
 *   conversation: any, lastTyping: number, filling: boolean}} Conv
 */

const S = {
  /** @type {{token: string, user: {id: number, name: string}} | null} */
  session: null,
  /** @type {Map<number, any>} conv_id -> chat list entry */
  chats: new Map(),
  /** @type {Map<number, Conv>} */
  convs: new Map(),
  /** @type {Map<number, string>} */
  names: new Map(),
  /** @type {Map<number, {online: boolean, last_seen: number | null}>} */
  presence: new Map(),
  /** @type {number | null} */
  open: null,
  /** @type {Connection | null} */
  conn: null,
  /** The connection's state (see `showConn`): presence shows only while 'online'. */
  connState: 'offline',
  device: deviceId(),
  /** The composer's context: replying to or editing a message of the open conversation.
   * @type {{mode: 'reply' | 'edit', conv: number, seq: number} | null} */
  compose: null,
  /** The message whose reaction picker is open. @type {{conv: number, seq: number} | null} */
  picker: null,
  /** Where the focus goes after the picker opened or closed. @type {{seq: number, sel: string} | null} */
  pickerFocus: null,
  /** The message that is the timeline's tab stop (its client_msg_id). @type {string | null} */
  activeMsg: null,
  /** A message to scroll to once shown, and one briefly highlighted.
   * @type {{conv: number, seq: number} | null} */
  focus: null,
  /** @type {{conv: number, seq: number, until: number} | null} */
  flash: null,
  /** Message search. @type {{q: string, hits: any[], cursor: string | null, loading: boolean, error: string}} */
  search: { q: '', hits: [], cursor: null, loading: false, error: '' },
};

const api = new Api(() => (S.session ? S.session.token : null));
api.onUnauthorized = () => logout(false);
const outbox = new Outbox();

/** @param {number} id @returns {Conv} */
function conv(id) {
  let c = S.convs.get(id);
  if (!c) {
    c = {
      msgs: new Map(), pending: new Map(), ops: new Map(), high: 0, oldest: 0, hasMore: true, loaded: false, loading: false,
      members: null, receipts: new Map(), metaLoaded: false, events: [], typing: new Map(),
      ackedDelivered: 0, ackedSeen: 0, conversation: null, lastTyping: 0, filling: false,
    };
    const chat = S.chats.get(id);
    if (chat && chat.last_message) c.high = chat.last_message.seq;
    S.convs.set(id, c);
  }
  return c;
}

// ---------------------------------------------------------------- names

const fetchingNames = new Set();
/** @param {number} id */
function userName(id) {
  if (S.session && id === S.session.user.id) return 'You';
  const n = S.names.get(id);
  if (n) return n;
  if (!fetchingNames.has(id)) {
    fetchingNames.add(id);
    api.get(`/api/users/${id}`).then((u) => {
      S.names.set(id, u.name);
      if (!S.presence.has(id)) S.presence.set(id, { online: u.online, last_seen: u.last_seen });
      render();
    }).catch(() => {});
  }
  return `user ${id}`;
}

// ---------------------------------------------------------------- rendering

let frame = 0;
function render() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    renderList();
    renderConv();
  });
}

/** The status of my message `seq` in a conversation, from the members' receipts. */
function statusOf(/** @type {number} */ convId, /** @type {number} */ seq) {
  const c = S.convs.get(convId);
  const me = S.session ? S.session.user.id : 0;
  if (!c || !c.metaLoaded || !c.members) return null;
  const others = c.members.filter((m) => m.user_id !== me);
  if (others.length === 0) return 'sent';
  const r = others.map((m) => c.receipts.get(m.user_id) || { delivered_seq: 0, seen_seq: 0 });
  if (r.every((x) => x.seen_seq >= seq)) return 'seen';
  if (r.every((x) => x.delivered_seq >= seq || x.seen_seq >= seq)) return 'delivered';
  return 'sent';
}

function typingIn(/** @type {number} */ convId) {
  const c = S.convs.get(convId);
  if (!c) return [];
  const now = Date.now();
  return [...c.typing].filter(([, until]) => until > now).map(([uid]) => uid);
}

/** Whether a chat is muted now (a timed mute ends by itself). @param {any} chat */
function isMuted(chat) {
  return !!chat && !!chat.muted && (chat.muted_until == null || chat.muted_until > Date.now());
}

/** The tab's title: unread messages of the chats not muted, then the name. */
function renderTitle() {
  let unread = 0;
  for (const chat of S.chats.values()) if (!isMuted(chat)) unread += chat.unread || 0;
  const title = unread > 0 ? `(${unread}) Parley` : 'Parley';
  if (document.title !== title) document.title = title;
}

/**
 * Whether the composer's text fits the server's limit; says by how much
 * it does not, and holds the send button meanwhile (the text is kept,
 * never cut).
 */
function composerFits() {
  const bytes = utf8.encode($('composer-input').value).length;
  const over = bytes - MAX_MESSAGE_BYTES;
  const hint = $('composer-limit');
  hint.hidden = over <= 0;
  hint.textContent = over > 0
    ? `${over} bytes too long: a message holds at most ${MAX_MESSAGE_BYTES} bytes (accented letters and emoji take more than one)`
    : '';
  $('send-btn').disabled = over > 0;
  return over <= 0;
}

function renderList() {
  renderTitle();
  const ul = $('chat-list');
  const me = S.session ? S.session.user.id : 0;
  const chats = [...S.chats.values()].sort((a, b) => (b.last_activity_at || 0) - (a.last_activity_at || 0));
  const rows = chats.map((chat) => {
    const c = S.convs.get(chat.conv_id);
    const pending = c && c.pending.size > 0;
    const lm = chat.last_message;
    let status = null;
    const waitingOne = pending ? [.../** @type {Conv} */ (c).pending.values()].pop() : null;
    if (waitingOne) status = waitingOne.failed ? 'failed' : 'pending';
    else if (lm && lm.sender === me) status = statusOf(chat.conv_id, lm.seq) || chat.last_message_status || 'sent';
    const peer = chat.kind === 'direct' && chat.peer ? livePresence(chat.peer.id) : null;
    const waiting = waitingOne;
    const last = waiting ? `You: ${waiting.body}`
      : lm ? `${chat.kind === 'group' || lm.sender === me ? `${userName(lm.sender)}: ` : ''}${lm.deleted || lm.preview === '' ? 'This message was deleted' : lm.preview}`
      : 'No messages yet';
    return chatRow({
      conv_id: chat.conv_id, name: chat.name, online: chat.kind === 'direct' ? !!(peer && peer.online) : null,
      last, time: lm ? lm.sent_at : chat.last_activity_at, status, unread: chat.unread || 0,
      current: S.open === chat.conv_id, typing: typingIn(chat.conv_id).length > 0,
      muted: isMuted(chat), mentions: chat.mentions || 0,
    }, openConv);
  });
  ul.replaceChildren(...rows);
  $('chats-empty').hidden = rows.length > 0;
}

function renderConv() {
  const view = $('conv-view');
  $('app-view').classList.toggle('in-conv', S.open !== null);
  if (S.open === null || !S.session) {
    view.classList.add('none');
    return;
  }
  view.classList.remove('none');
  const id = S.open;
  const c = conv(id);
  const chat = S.chats.get(id);
  const me = S.session.user.id;
  const group = chat ? chat.kind === 'group' : c.conversation ? c.conversation.kind === 'group' : false;
  $('conv-title').textContent = chat ? chat.name : c.conversation ? c.conversation.name : '';
  $('details-btn').hidden = !group;
  // Presence line.
  let sub = '';
  if (group) {
    const members = c.members ? c.members.filter((m) => m.status !== 'left') : [];
    const online = members.filter((m) => m.user_id !== me && livePresence(m.user_id)?.online).length;
    sub = members.length ? `${members.length} members${online ? `, ${online} online` : ''}` : '';
  } else if (chat && chat.peer) {
    const p = livePresence(chat.peer.id);
    sub = p ? (p.online ? 'online' : lastSeen(p.last_seen)) : '';
  }
  $('conv-sub').textContent = sub;
  const typers = typingIn(id);
  $('typing').textContent = typers.length === 0 ? ''
    : group ? `${typers.map(userName).join(', ')} ${typers.length > 1 ? 'are' : 'is'} typing…` : 'typing…';

  // Mute control.
  const muted = isMuted(chat);
  const muteBtn = $('mute-btn');
  muteBtn.classList.toggle('on', muted);
  const muteLabel = muted ? `Unmute${chat && chat.muted_until ? ` (muted until ${clock(chat.muted_until)})` : ''}` : 'Mute';
  muteBtn.setAttribute('aria-label', muteLabel);
  muteBtn.title = muteLabel;
  renderCompose();

  // Timeline: text messages in seq order (events change them in place),
  // then pending ones; membership events by time.
  const admin = group && (c.members || []).some((m) => m.user_id === me && m.role === 'admin' && m.status !== 'left');
  const overlay = opOverlay(c);
  const flash = S.flash && S.flash.conv === id && S.flash.until > Date.now() ? S.flash.seq : null;
  /** @type {any[]} */
  const msgs = [...c.msgs.values()].filter(isText).sort((a, b) => a.seq - b.seq).map((m) => {
    const o = overlay.get(m.seq);
    const deleted = !!m.deleted || !!(o && o.deleted);
    return {
      kind: 'msg', seq: m.seq, cmid: m.client_msg_id, sender: m.sender, at: m.sent_at,
      body: o && o.body !== undefined ? o.body : m.body,
      status: m.sender === me ? statusOf(id, m.seq) || 'sent' : null,
      deleted, edited: !!m.edited_at || !!(o && o.body !== undefined), quote: quoteOf(c, m, overlay),
      reactions: deleted ? [] : chips(m, o, me), mentioned: Array.isArray(m.mentions) && m.mentions.includes(me),
      canEdit: m.sender === me && !deleted, canDelete: !deleted && (m.sender === me || admin),
      picker: !!S.picker && S.picker.conv === id && S.picker.seq === m.seq, opPending: !!o, flash: flash === m.seq,
    };
  });
  for (const p of c.pending.values()) {
    const item = { kind: 'msg', seq: null, cmid: p.client_msg_id, sender: me, body: p.body, at: p.created_at,
      status: p.failed ? 'failed' : 'pending', error: p.failed, quote: quoteOf(c, p, overlay),
      retry: p.failed ? () => retryFailed(p) : null, discard: p.failed ? () => discardFailed(p) : null,
      copy: p.failed ? () => copyText(p.body) : null };
    // A failed message stays where it was written; a pending one is
    // about to be stored after everything else.
    const at = p.failed ? msgs.findIndex((m) => m.seq !== null && m.at > p.created_at) : -1;
    if (at >= 0) msgs.splice(at, 0, item); else msgs.push(item);
  }
  // Events older than the loaded history wait until it is scrolled to.
  const oldestAt = !c.hasMore || !msgs.length ? 0 : msgs[0].at;
  const events = c.events.filter((e) => e.at >= oldestAt).sort((a, b) => a.at - b.at)
    .map((e) => (e.text !== undefined ? e : { kind: 'event', at: e.at, text: eventText(e.action, e.user, e.by) }));
  /** @type {any[]} */
  const items = [];
  let e = 0;
  for (const m of msgs) {
    while (e < events.length && events[e].at <= m.at) items.push(events[e++]);
    items.push(m);
  }
  while (e < events.length) items.push(events[e++]);

  const box = $('messages');
  const fromBottom = box.scrollHeight - box.scrollTop;
  const atBottom = fromBottom - box.clientHeight < 60;
  // The timeline is rebuilt: keep the keyboard focus on the same control.
  const active = /** @type {HTMLElement | null} */ (document.activeElement);
  const focusKey = active && box.contains(active) ? active.dataset.key : undefined;
  const children = [];
  if (c.hasMore && c.loaded) children.push(h('p', { class: 'older muted' }, c.loading ? 'Loading older messages…' : 'Scroll up for older messages'));
  if (!c.hasMore && c.loaded) children.push(h('p', { class: 'older muted' }, 'Start of the conversation'));
  box.replaceChildren(...children, timeline(items, {
    me, meName: S.session.user.name.toLowerCase(), group, name: userName, details: showStatus,
    reply: startReply, edit: startEdit, del: deleteMessage, react: reactTo, edits: showEdits,
    picker: (seq) => {
      const prev = S.picker;
      S.picker = seq === null ? null : { conv: id, seq };
      S.pickerFocus = seq !== null ? { seq, sel: '.picker button' } : prev ? { seq: prev.seq, sel: `[data-key="${prev.seq}:react"]` } : null;
      render();
    },
    jump: (seq) => jumpTo(id, seq),
  }));
  box.scrollTop = atBottom || c.stickBottom ? box.scrollHeight : box.scrollHeight - fromBottom;
  c.stickBottom = false;
  rovingTimeline(box);
  if (focusKey) {
    const el = /** @type {HTMLElement | undefined} */ ([...box.querySelectorAll('[data-key]')].find((e) => /** @type {HTMLElement} */ (e).dataset.key === focusKey));
    if (el) el.focus({ preventScroll: true });
  }
  if (S.pickerFocus) {
    // The picker just opened (focus its first emoji) or closed (back to its button).
    const el = box.querySelector(`.msg[data-seq="${S.pickerFocus.seq}"] ${S.pickerFocus.sel}`);
    S.pickerFocus = null;
    if (el) el.focus({ preventScroll: true });
  }
  if (S.focus && S.focus.conv === id) {
    const el = box.querySelector(`.msg[data-seq="${S.focus.seq}"]`);
    if (el) {
      S.flash = { conv: id, seq: S.focus.seq, until: Date.now() + 2000 };
      S.focus = null;
      el.classList.add('flash');
      el.scrollIntoView({ block: 'center' });
      setTimeout(render, 2100);
    }
  }
  ackSeen();
}

/** Whether a history row is a text message (not an edit, delete or reaction event). @param {any} m */
function isText(m) {
  return !m.kind || m.kind === 'text';
}

/**
 * What the not yet acknowledged events of a conversation change, by target
 * seq, to show them at once: a new text, a deletion, reaction toggles.
 * @param {Conv} c @returns {Map<number, {body?: string, deleted?: boolean, rx: {emoji: string, add: boolean}[]}>}
 */
function opOverlay(c) {
  /** @type {Map<number, any>} */
  const out = new Map();
  for (const op of [...c.ops.values()].sort((a, b) => a.created_at - b.created_at)) {
    const o = out.get(op.seq) || { rx: [] };
    if (op.op === 'edit') o.body = op.body;
    else if (op.op === 'delete') o.deleted = true;
    else if (op.op === 'react') o.rx.push({ emoji: op.emoji, add: !op.remove });
    out.set(op.seq, o);
  }
  return out;
}

/** A message's reactions as emoji -> the users who reacted (built once from `reactions`). @param {any} m @returns {Map<string, Set<number>>} */
function reactionSets(m) {
  if (!m.rx) {
    m.rx = new Map();
    for (const r of m.reactions || []) if (r && r.emoji) m.rx.set(r.emoji, new Set(r.users || []));
  }
  return m.rx;
}

/** The reaction chips of a message, with the pending toggles applied. @param {any} m @param {any} o @param {number} me */
function chips(m, o, me) {
  const sets = new Map([...reactionSets(m)].map(([e, users]) => [e, new Set(users)]));
  for (const t of o ? o.rx : []) {
    const users = sets.get(t.emoji) || new Set();
    if (t.add) users.add(me); else users.delete(me);
    sets.set(t.emoji, users);
  }
  return [...sets].filter(([, users]) => users.size > 0).map(([emoji, users]) => ({
    emoji, count: users.size, mine: users.has(me),
    // Who reacted, you first.
    who: [...users].sort((a, b) => (b === me ? 1 : 0) - (a === me ? 1 : 0)).map((u) => (u === me ? 'you' : userName(u))),
  }));
}

/** The quote of a reply: from the quoted message if loaded (its current text), else the server's `reply`. */
function quoteOf(/** @type {Conv} */ c, /** @type {any} */ m, /** @type {Map<number, any>} */ overlay) {
  const seq = m.reply_to ?? (m.reply && m.reply.seq);
  if (!seq) return null;
  const t = c.msgs.get(seq);
  if (t && isText(t)) {
    const o = overlay.get(seq);
    const deleted = !!t.deleted || !!(o && o.deleted);
    const text = o && o.body !== undefined ? o.body : t.body;
    return { seq, name: userName(t.sender), text: deleted ? '' : text.slice(0, 100), deleted, loaded: true };
  }
  const r = m.reply;
  if (r) return { seq, name: userName(r.sender), text: r.preview || '', deleted: !!r.deleted, loaded: false };
  return { seq, name: 'a message', text: '', deleted: false, loaded: false };
}

/** The line above the composer: "Replying to …" or "Editing …", with a cancel button. */
function renderCompose() {
  const box = $('compose-ctx');
  const k = S.compose;
  const c = k && S.open === k.conv ? conv(k.conv) : null;
  const m = c && k ? c.msgs.get(k.seq) : null;
  if (!k || !m || m.deleted) {
    box.hidden = true;
    $('composer').classList.remove('editing');
    return;
  }
  box.hidden = false;
  const preview = m.body.length > 80 ? `${m.body.slice(0, 80)}…` : m.body;
  const title = k.mode === 'edit' ? 'Editing your message' : `Replying to ${userName(m.sender)}`;
  $('compose-ctx-text').replaceChildren(h('strong', null, title), ' ', h('span', { class: 'muted' }, preview));
  $('compose-cancel').setAttribute('aria-label', k.mode === 'edit' ? 'Cancel editing' : 'Cancel reply');
  $('composer').classList.toggle('editing', k.mode === 'edit');
}

/** @param {string} state @param {string} detail */
function showConn(state, detail) {
  const was = S.connState;
  S.connState = state;
  // Presence is only as fresh as the connection: re-render when it changes.
  if ((was === 'online') !== (state === 'online')) render();
  const el = $('conn-state');
  el.hidden = false;
  el.dataset.state = state;
  el.dataset.node = state === 'online' ? detail : '';
  el.textContent = state === 'online' ? `Connected to ${detail}`
    : state === 'syncing' ? 'Syncing…'
    : state === 'connecting' ? `Connecting to ${detail}…`
    : `Offline, ${detail}`;
}

// ---------------------------------------------------------------- data

async function loadChats() {
  try {
    const { chats } = await api.get('/api/chats');
    const seen = new Set();
    for (const chat of chats) {
      seen.add(chat.conv_id);
      const old = S.chats.get(chat.conv_id);
      // Keep a newer live last message than the listing's.
      if (old && old.last_message && (!chat.last_message || old.last_message.seq > chat.last_message.seq)) {
        chat.last_message = old.last_message;
        chat.last_activity_at = Math.max(old.last_activity_at || 0, chat.last_activity_at || 0);
      }
      if (chat.peer) S.names.set(chat.peer.id, chat.peer.name);
      S.chats.set(chat.conv_id, chat);
      const c = S.convs.get(chat.conv_id);
      if (c && chat.last_message && c.high === 0) c.high = chat.last_message.seq;
    }
    for (const id of [...S.chats.keys()]) if (!seen.has(id)) S.chats.delete(id);
    if (S.open !== null && !S.chats.has(S.open)) closeConv();
    render();
  } catch (e) { /* offline: keep what we have */ }
}

let chatsTimer = 0;
function reloadChatsSoon() {
  clearTimeout(chatsTimer);
  chatsTimer = window.setTimeout(loadChats, 150);
}

/** Members, receipts and (groups) membership history of a conversation. @param {number} id */
async function loadMeta(id) {
  const c = conv(id);
  try {
    const [detail, receipts] = await Promise.all([
      api.get(`/api/conversations/${id}`), api.get(`/api/conversations/${id}/receipts`),
    ]);
    c.conversation = detail.conversation;
    c.members = detail.members;
    for (const r of receipts.receipts) mergeReceipt(c, r);
    c.metaLoaded = true;
    if (detail.conversation.kind === 'direct') {
      // The peer's presence and last seen, in case no frame told us yet.
      const peer = detail.members.find((/** @type {any} */ m) => S.session && m.user_id !== S.session.user.id);
      if (peer) {
        const u = await api.get(`/api/users/${peer.user_id}`);
        S.names.set(u.id, u.name);
        S.presence.set(u.id, { online: u.online, last_seen: u.last_seen });
      }
    }
    if (detail.conversation.kind === 'group') {
      const { events } = await api.get(`/api/groups/${id}/history`);
      const live = c.events.filter((ev) => ev.live === 'group');
      // The text is written at render time: the names may arrive later.
      c.events = [...events.map((ev) => ({ kind: 'event', at: ev.at, action: ev.action, user: ev.user_id, by: ev.by })), ...live];
    }
    render();
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 403)) { S.chats.delete(id); if (S.open === id) closeConv(); render(); }
  }
}

/** A user's name as the object of a sentence: "you", not "You". @param {number} id */
function objectName(id) {
  return S.session && id === S.session.user.id ? 'you' : userName(id);
}

/**
 * A user's presence as last heard, while this client is connected; while
 * it is not, none is shown (what it knew may no longer hold: nobody is
 * shown online).
 * @param {number} id
 */
function livePresence(id) {
  return S.connState === 'online' ? S.presence.get(id) : undefined;
}

/** @param {string} action @param {number} user @param {number} by */
function eventText(action, user, by) {
  switch (action) {
    case 'added': return user === by ? `${userName(user)} created the group` : `${userName(by)} added ${objectName(user)}`;
    case 'left': return `${userName(user)} left`;
    case 'removed': return `${userName(by)} removed ${objectName(user)}`;
    case 'promoted': return `${userName(user)} is now an admin`;
    default: return `${userName(user)}: ${action}`;
  }
}

/** @param {Conv} c @param {any} r */
function mergeReceipt(c, r) {
  const old = c.receipts.get(r.user_id) || { delivered_seq: 0, seen_seq: 0 };
  c.receipts.set(r.user_id, {
    delivered_seq: Math.max(old.delivered_seq, r.delivered_seq || 0),
    seen_seq: Math.max(old.seen_seq, r.seen_seq || 0),
  });
}

/**
 * Adds a row (a text message or an event), once per (conv_id, seq).
 * Returns whether it was new. `asOf`: the seq up to which the row's state
 * already includes the events (a history page's newest seq; a live
 * message's own).
 * @param {any} m @param {number} [asOf]
 */
function addMessage(m, asOf) {
  const c = conv(m.conv_id);
  if (c.msgs.has(m.seq)) return false;
  if (isText(m)) m.asOf = Math.max(m.seq, asOf || 0);
  c.msgs.set(m.seq, m);
  if (S.session && m.sender === S.session.user.id && m.client_msg_id) {
    if (c.pending.has(m.client_msg_id)) {
      c.pending.delete(m.client_msg_id);
      outbox.remove(m.client_msg_id).catch(() => {});
    }
    if (c.ops.has(m.client_msg_id)) {
      c.ops.delete(m.client_msg_id);
      outbox.remove(m.client_msg_id).catch(() => {});
    }
  }
  if (!c.oldest || m.seq < c.oldest) c.oldest = m.seq;
  return true;
}

/**
 * Applies an edit, delete or reaction event to its target, if loaded.
 * Events may come twice or late (live, then in a history page, or a sync
 * replay): an edit applies only if newer than the text shown, a reaction
 * only if newer than the last change of that (user, emoji); a delete is final.
 * @param {Conv} c @param {any} ev @returns {boolean} whether the target changed
 */
function applyEvent(c, ev) {
  const t = c.msgs.get(ev.target);
  if (!t || !isText(t)) return false;
  const base = t.asOf || t.seq;
  if (ev.kind === 'delete') {
    if (t.deleted) return false;
    t.deleted = true;
    t.body = '';
    t.rx = new Map();
    t.reactions = [];
    return true;
  }
  if (t.deleted) return false;
  if (ev.kind === 'edit') {
    if (ev.seq <= Math.max(base, t.editSeq || 0)) return false;
    t.editSeq = ev.seq;
    t.body = ev.body;
    t.edited_at = ev.sent_at || Date.now();
    return true;
  }
  if (ev.kind === 'reaction') {
    if (!t.rxSeq) t.rxSeq = new Map();
    const key = `${ev.sender}|${ev.emoji}`;
    if (ev.seq <= (t.rxSeq.get(key) ?? base)) return false;
    t.rxSeq.set(key, ev.seq);
    const sets = reactionSets(t);
    const users = sets.get(ev.emoji) || new Set();
    if (ev.added === false) users.delete(ev.sender); else users.add(ev.sender);
    if (users.size) sets.set(ev.emoji, users); else sets.delete(ev.emoji);
    return true;
  }
  return false;
}

/** The chat list's last message follows an edit or delete of it. @param {any} ev */
function eventOnChat(ev) {
  const chat = S.chats.get(ev.conv_id);
  const lm = chat && chat.last_message;
  if (!lm || lm.seq !== ev.target) return;
  if (ev.kind === 'edit') lm.preview = (ev.body || '').slice(0, 100);
  if (ev.kind === 'delete') { lm.preview = ''; lm.deleted = true; }
}

/**
 * Adds a page of history (any order): text messages come in their current
 * state; event rows still update targets loaded earlier.
 * @param {number} id @param {any[]} messages
 */
function addPage(id, messages) {
  const c = conv(id);
  const rows = [...messages].sort((a, b) => a.seq - b.seq);
  const top = rows.length ? rows[rows.length - 1].seq : 0;
  const events = [];
  for (const m of rows) if (addMessage(m, top) && !isText(m)) events.push(m);
  for (const ev of events) if (applyEvent(c, ev)) eventOnChat(ev);
}

/** The newest page, on first opening. @param {number} id */
async function loadHistory(id) {
  const c = conv(id);
  if (c.loading) return;
  c.loading = true;
  try {
    const before = c.loaded && c.oldest ? `&before_seq=${c.oldest}` : '';
    const { messages } = await api.get(`/api/conversations/${id}/messages?limit=${PAGE}${before}`);
    addPage(id, messages);
    if (messages.length) c.high = Math.max(c.high, messages[0].seq);
    c.hasMore = messages.length === PAGE && c.oldest > 1;
    if (!c.loaded) c.stickBottom = true;
    c.loaded = true;
    ackDelivered(id);
  } catch (e) { /* offline: try again on scroll or reopen */ } finally {
    c.loading = false;
    render();
  }
}

/** Fetches the messages between `from` (exclusive) and `to` (exclusive) that a gap left out. */
async function fillGap(/** @type {number} */ id, /** @type {number} */ from, /** @type {number} */ to) {
  const c = conv(id);
  let before = to;
  try {
    while (before > from + 1) {
      const { messages } = await api.get(`/api/conversations/${id}/messages?limit=200&before_seq=${before}`);
      if (!messages.length) break;
      addPage(id, messages);
      before = messages[messages.length - 1].seq;
    }
  } catch (e) { /* the next reconnect's sync brings them */ }
  render();
  ackDelivered(id);
}

// ---------------------------------------------------------------- acks

const ackQueue = new Set();
/** Delivered: up to the highest seq received in the conversation. @param {number} id */
function ackDelivered(id) {
  ackQueue.add(id);
  queueMicrotask(() => {
    for (const cid of ackQueue) {
      const c = conv(cid);
      if (c.high > c.ackedDelivered && S.conn && S.conn.send({ type: 'ack', conv_id: cid, seq: c.high, kind: 'delivered' })) {
        c.ackedDelivered = c.high;
      }
    }
    ackQueue.clear();
  });
}

/** Seen: the open conversation, while the page is visible, up to what is displayed. */
function ackSeen() {
  if (S.open === null || document.visibilityState !== 'visible') return;
  const c = conv(S.open);
  const chat = S.chats.get(S.open);
  const shown = Math.max(0, ...c.msgs.keys());
  if (shown > c.ackedSeen && S.conn && S.conn.send({ type: 'ack', conv_id: S.open, seq: shown, kind: 'seen' })) {
    c.ackedSeen = shown;
  }
  if (chat && (chat.unread || chat.mentions) && shown >= (chat.last_message ? chat.last_message.seq : 0)) {
    chat.unread = 0;
    chat.mentions = 0;
    render();
  }
}

// ---------------------------------------------------------------- frames

/** @param {any} f */
function onFrame(f) {
  const me = S.session ? S.session.user.id : 0;
  switch (f.type) {
    case 'message': {
      const c = conv(f.conv_id);
      const gapFrom = c.high;
      const isNew = addMessage(f);
      if (f.seq > c.high) {
        if (gapFrom > 0 && f.seq > gapFrom + 1) fillGap(f.conv_id, gapFrom, f.seq);
        c.high = f.seq;
      }
      ackDelivered(f.conv_id);
      if (!isText(f)) {
        // An edit, delete or reaction: changes its target, is not shown
        // itself, never unread, never notified.
        if (isNew && applyEvent(c, f)) eventOnChat(f);
        if (!S.chats.has(f.conv_id)) reloadChatsSoon();
        render();
        break;
      }
      c.typing.delete(f.sender);
      const chat = S.chats.get(f.conv_id);
      if (!chat) { reloadChatsSoon(); break; }
      if (!chat.last_message || f.seq >= chat.last_message.seq) {
        chat.last_message = { seq: f.seq, sender: f.sender, preview: f.body.slice(0, 100), sent_at: f.sent_at, deleted: !!f.deleted };
        chat.last_activity_at = Math.max(chat.last_activity_at || 0, f.sent_at);
        if (f.sender === me) chat.last_message_status = 'sent';
      }
      if (isNew && f.sender !== me) {
        const visible = S.open === f.conv_id && document.visibilityState === 'visible';
        const mentioned = Array.isArray(f.mentions) && f.mentions.includes(me);
        if (!visible && f.seq > c.ackedSeen) {
          chat.unread = (chat.unread || 0) + 1;
          if (mentioned) chat.mentions = (chat.mentions || 0) + 1;
        }
        // Muted chats notify only when the user is mentioned.
        if (!isMuted(chat) || mentioned) notify.show(chat.name, f.body, f.conv_id);
      }
      if (!c.metaLoaded && f.sender === me) loadMeta(f.conv_id);
      render();
      break;
    }
    case 'sent': {
      const c = conv(f.conv_id);
      const p = c.pending.get(f.client_msg_id);
      const op = c.ops.get(f.client_msg_id);
      outbox.remove(f.client_msg_id).catch(() => {});
      if (op) {
        // An edit, delete or reaction of ours is stored: apply it as the
        // event the others receive (once, by seq).
        c.ops.delete(f.client_msg_id);
        const ev = {
          conv_id: f.conv_id, seq: f.seq, sender: me, client_msg_id: f.client_msg_id, sent_at: f.sent_at,
          kind: op.op === 'react' ? 'reaction' : op.op, target: op.seq, body: op.op === 'edit' ? op.body : '',
          emoji: op.emoji, added: op.op === 'react' ? !op.remove : undefined,
        };
        if (addMessage(ev) && applyEvent(c, ev)) eventOnChat(ev);
        if (f.seq > c.high) c.high = f.seq;
      }
      if (p) {
        c.pending.delete(f.client_msg_id);
        addMessage({ conv_id: f.conv_id, seq: f.seq, sender: me, client_msg_id: f.client_msg_id, body: p.body, sent_at: f.sent_at,
          kind: 'text', reply_to: p.reply_to });
        if (f.seq > c.high) c.high = f.seq;
        const chat = S.chats.get(f.conv_id);
        if (chat && (!chat.last_message || f.seq >= chat.last_message.seq)) {
          chat.last_message = { seq: f.seq, sender: me, preview: p.body.slice(0, 100), sent_at: f.sent_at };
          chat.last_activity_at = f.sent_at;
          chat.last_message_status = 'sent';
        }
        if (!c.metaLoaded) loadMeta(f.conv_id);
      }
      render();
      break;
    }
    case 'receipt': {
      const c = conv(f.conv_id);
      mergeReceipt(c, f);
      if (!c.metaLoaded) loadMeta(f.conv_id);
      render();
      break;
    }
    case 'presence':
      S.presence.set(f.user_id, { online: f.online, last_seen: f.last_seen });
      render();
      break;
    case 'typing': {
      const c = conv(f.conv_id);
      c.typing.set(f.user_id, Date.now() + (f.expires_in_ms || 5000));
      setTimeout(render, (f.expires_in_ms || 5000) + 50);
      render();
      break;
    }
    case 'member_joined':
    case 'member_left': {
      const c = conv(f.conv_id);
      c.events.push({ kind: 'event', at: Date.now(), action: f.type === 'member_joined' ? 'added' : f.user_id === f.by ? 'left' : 'removed', user: f.user_id, by: f.by });
      if (f.type === 'member_left' && f.user_id === me) {
        // Say so: a chat that just vanishes looks like a bug.
        const gone = S.chats.get(f.conv_id);
        if (f.by !== me) toast(`${userName(f.by)} removed you from ${gone ? gone.name : 'a group'}`);
        S.chats.delete(f.conv_id);
        if (S.open === f.conv_id) closeConv();
      } else {
        c.metaLoaded = false;
        loadMeta(f.conv_id);
      }
      reloadChatsSoon();
      render();
      break;
    }
    case 'group_updated': {
      const c = conv(f.conv_id);
      const chat = S.chats.get(f.conv_id);
      if (!chat && !f.deleted) reloadChatsSoon();
      if (f.deleted) {
        S.chats.delete(f.conv_id);
        if (S.open === f.conv_id) closeConv();
      } else {
        if (chat && chat.name !== f.name) c.events.push({ kind: 'event', live: 'group', at: Date.now(), text: `Group renamed to “${f.name}”` });
        else c.events.push({ kind: 'event', live: 'group', at: Date.now(), text: 'Group description changed' });
        if (chat) chat.name = f.name;
        if (c.conversation) { c.conversation.name = f.name; c.conversation.description = f.description; }
      }
      render();
      break;
    }
    case 'error': {
      const ref = f.ref;
      for (const c of S.convs.values()) {
        const op = ref && c.ops.get(ref);
        if (op) {
          if (RETRYABLE.has(f.code)) {
            setTimeout(() => sendOp(op), f.retry_after_ms || 1000);
          } else {
            // Refused (not the author, deleted meanwhile, …): undo what was shown.
            c.ops.delete(ref);
            outbox.remove(ref).catch(() => {});
            toast(`${OP_FAILED[op.op] || 'The change failed'}: ${f.message || f.code}`);
          }
          continue;
        }
        const p = ref && c.pending.get(ref);
        if (!p) continue;
        if (RETRYABLE.has(f.code)) {
          setTimeout(() => sendPending(p), f.retry_after_ms || 1000);
        } else {
          // Kept (in the outbox too, so a reload shows it) until the user
          // retries or discards it.
          p.failed = f.message || f.code;
          outbox.put(p).catch(() => {});
        }
      }
      render();
      break;
    }
    default:
      break;
  }
}

// ---------- keyboard in the timeline ----------
// The timeline is one stop of the Tab order, not four buttons per
// message: one message is tabbable (the one last focused, else the
// newest), Up and Down move between messages, and Tab walks through the
// actions of the focused message only, then on to the composer.

/** What a message may hold that Tab would stop at. */
const TABBABLE = 'button, a[href]';

/** Gives the timeline its single tab stop. @param {HTMLElement} box */
function rovingTimeline(box) {
  const msgs = /** @type {HTMLElement[]} */ ([...box.querySelectorAll('.msg')]);
  const active = msgs.find((m) => m.dataset.cmid === S.activeMsg) || msgs[msgs.length - 1];
  for (const m of msgs) {
    m.tabIndex = m === active ? 0 : -1;
    const inside = m.contains(document.activeElement);
    for (const el of m.querySelectorAll(TABBABLE)) /** @type {HTMLElement} */ (el).tabIndex = inside ? 0 : -1;
  }
}

/** Focus entered a message: it becomes the timeline's tab stop, its actions tabbable. @param {FocusEvent} ev */
function onTimelineFocusIn(ev) {
  const m = /** @type {HTMLElement | null} */ (/** @type {HTMLElement} */ (ev.target).closest('.msg'));
  if (!m) return;
  S.activeMsg = m.dataset.cmid || null;
  for (const other of $('messages').querySelectorAll('.msg')) {
    const o = /** @type {HTMLElement} */ (other);
    o.tabIndex = o === m ? 0 : -1;
    for (const el of o.querySelectorAll(TABBABLE)) /** @type {HTMLElement} */ (el).tabIndex = o === m ? 0 : -1;
  }
}

/** Focus left a message for good: its actions leave the Tab order. @param {FocusEvent} ev */
function onTimelineFocusOut(ev) {
  const m = /** @type {HTMLElement | null} */ (/** @type {HTMLElement} */ (ev.target).closest('.msg'));
  const to = /** @type {Node | null} */ (ev.relatedTarget);
  if (!m || (to && m.contains(to))) return;
  for (const el of m.querySelectorAll(TABBABLE)) /** @type {HTMLElement} */ (el).tabIndex = -1;
}

/** Up and Down from a message move to the previous or next one. @param {KeyboardEvent} ev */
function onTimelineKey(ev) {
  if (ev.key !== 'ArrowUp' && ev.key !== 'ArrowDown') return;
  const t = /** @type {HTMLElement} */ (ev.target);
  if (!t.classList.contains('msg')) return;
  const msgs = /** @type {HTMLElement[]} */ ([...$('messages').querySelectorAll('.msg')]);
  const next = msgs[msgs.indexOf(t) + (ev.key === 'ArrowUp' ? -1 : 1)];
  if (next) {
    ev.preventDefault();
    next.focus();
  }
}

/** After `hello`: resend the outbox (same client_msg_id), refresh lists. */
function onOpen() {
  // API calls follow the WebSocket to whichever node it reached.
  if (S.conn) {
    const origin = S.conn.current.replace(/^ws/, 'http').replace(/\/ws$/, '');
    api.base = origin === location.origin ? '' : origin;
  }
  for (const c of S.convs.values()) for (const p of c.pending.values()) if (!p.failed) sendPending(p);
  for (const c of S.convs.values()) for (const op of [...c.ops.values()].sort((a, b) => a.created_at - b.created_at)) sendOp(op);
  for (const c of S.convs.values()) c.ackedDelivered = 0;
  loadChats();
  if (S.open !== null) loadMeta(S.open);
  refreshGateways();
}

async function refreshGateways() {
  try {
    const { gateways } = await api.get('/api/cluster/gateways');
    const urls = gateways.map((/** @type {any} */ g) => g.ws_url);
    localStorage.setItem('parley.gateways', JSON.stringify(urls));
    if (S.conn) S.conn.setGateways(urls);
  } catch { /* keep the known list */ }
}

/** @param {any} p */
function sendPending(p) {
  if (!S.conn) return;
  /** @type {Record<string, any>} */
  const frame = { type: 'send', conv_id: p.conv_id, client_msg_id: p.client_msg_id, body: p.body };
  if (p.reply_to) frame.reply_to = p.reply_to;
  S.conn.send(frame);
}

/**
 * Sends a failed message again: a new client_msg_id, since the server
 * refused the old one for good (too long, not a member, …); if it refuses
 * again, it fails again with the new reason.
 * @param {any} p
 */
async function retryFailed(p) {
  const c = conv(p.conv_id);
  c.pending.delete(p.client_msg_id);
  outbox.remove(p.client_msg_id).catch(() => {});
  const item = { ...p, client_msg_id: newId(), failed: undefined, created_at: Date.now() };
  c.pending.set(item.client_msg_id, item);
  render();
  try { await outbox.put(item); } catch { /* private mode: memory only */ }
  sendPending(item);
}

/** Forgets a failed message. @param {any} p */
function discardFailed(p) {
  conv(p.conv_id).pending.delete(p.client_msg_id);
  outbox.remove(p.client_msg_id).catch(() => {});
  render();
}

/** Copies a text to the clipboard, saying whether it worked. @param {string} text */
async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast('Copied');
  } catch {
    toast('Could not copy: select the text instead');
  }
}

/** Sends an edit, delete or reaction from the outbox (the same client_msg_id each time). @param {any} op @returns {boolean} */
function sendOp(op) {
  if (!S.conn) return false;
  /** @type {Record<string, any>} */
  const frame = { type: op.op, conv_id: op.conv_id, seq: op.seq, client_msg_id: op.client_msg_id };
  if (op.op === 'edit') frame.body = op.body;
  if (op.op === 'react') {
    frame.emoji = op.emoji;
    if (op.remove) frame.remove = true;
  }
  return S.conn.send(frame);
}

/** What a refused event did not do, for the error message. */
const OP_FAILED = /** @type {Record<string, string>} */ ({
  edit: 'The message could not be edited', delete: 'The message could not be deleted', react: 'The reaction could not be saved',
});

// ---------------------------------------------------------------- actions

let counter = 0;
/** A new client_msg_id: unique per device. */
function newId() {
  return `${S.device.slice(-12)}-${Date.now().toString(36)}-${(counter++).toString(36)}`;
}

/** @param {string} body @param {number | null} [replyTo] */
async function sendMessage(body, replyTo) {
  if (S.open === null || !S.session) return;
  /** @type {any} */
  const item = {
    client_msg_id: newId(), user_id: S.session.user.id, conv_id: S.open, body, created_at: Date.now(),
  };
  if (replyTo) item.reply_to = replyTo;
  const c = conv(S.open);
  c.pending.set(item.client_msg_id, item);
  c.stickBottom = true;
  render();
  try { await outbox.put(item); } catch { /* private mode: memory only */ }
  sendPending(item);
}

/**
 * Queues an edit, delete or reaction like a message: persisted in the
 * outbox, shown at once, sent now if connected and again (same
 * client_msg_id) after every reconnect until acknowledged.
 * @param {'edit' | 'delete' | 'react'} kind @param {number} seq @param {{body?: string, emoji?: string, remove?: boolean}} [extra]
 */
async function queueOp(kind, seq, extra) {
  if (S.open === null || !S.session) return;
  const op = {
    client_msg_id: newId(), user_id: S.session.user.id, conv_id: S.open, op: kind, seq,
    body: extra && extra.body !== undefined ? extra.body : '', created_at: Date.now(),
    ...(extra && extra.emoji ? { emoji: extra.emoji } : {}), ...(extra && extra.remove ? { remove: true } : {}),
  };
  conv(S.open).ops.set(op.client_msg_id, op);
  render();
  try { await outbox.put(op); } catch { /* private mode: memory only */ }
  if (!sendOp(op)) toast('Offline: the change will be sent when Parley reconnects.');
}

/** @param {number} seq */
function startReply(seq) {
  if (S.open === null) return;
  S.compose = { mode: 'reply', conv: S.open, seq };
  render();
  $('composer-input').focus();
}

/** @param {number} seq */
function startEdit(seq) {
  if (S.open === null) return;
  const m = conv(S.open).msgs.get(seq);
  if (!m || m.deleted) return;
  const pendingEdit = [...conv(S.open).ops.values()].filter((o) => o.seq === seq && o.op === 'edit').pop();
  S.compose = { mode: 'edit', conv: S.open, seq };
  const input = $('composer-input');
  input.value = pendingEdit ? pendingEdit.body : m.body;
  input.style.height = '';
  composerFits();
  render();
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

function cancelCompose() {
  const editing = S.compose && S.compose.mode === 'edit';
  S.compose = null;
  if (editing) {
    $('composer-input').value = '';
    $('composer-input').style.height = '';
    composerFits();
  }
  render();
}

/** @param {number} seq */
function deleteMessage(seq) {
  if (S.open === null) return;
  if (!confirm('Delete this message for everyone?')) return;
  if (S.compose && S.compose.seq === seq) cancelCompose();
  queueOp('delete', seq);
}

/** @param {number} seq @param {string} emoji @param {boolean} add */
function reactTo(seq, emoji, add) {
  queueOp('react', seq, add ? { emoji } : { emoji, remove: true });
}

/** The versions of an edited message, oldest first. @param {number} seq */
async function showEdits(seq) {
  if (S.open === null) return;
  const list = $('edits-list');
  list.replaceChildren(h('li', null, 'Loading…'));
  $('edits-dialog').showModal();
  try {
    const { versions } = await api.get(`/api/conversations/${S.open}/messages/${seq}/edits`);
    list.replaceChildren(...versions.map((/** @type {any} */ v, /** @type {number} */ i) => h('li', { 'data-edit-seq': v.edit_seq ?? null },
      h('span', { class: 'edit-when muted small' },
        `${i === 0 ? 'Original' : 'Edited'}${i === versions.length - 1 && i > 0 ? ' (current)' : ''}, ${dayLabel(v.at)} ${clock(v.at)}`),
      h('span', { class: 'edit-body' }, v.body))));
  } catch (e) {
    list.replaceChildren(h('li', { class: 'error' }, e instanceof Error ? e.message : 'failed'));
  }
}

/** Opens a conversation's message (loading older pages up to it) and highlights it. @param {number} id @param {number} seq */
async function jumpTo(id, seq) {
  if (S.open !== id) openConv(id);
  S.focus = { conv: id, seq };
  const c = conv(id);
  for (let i = 0; i < 40 && !c.msgs.has(seq); i++) {
    if (c.loading) { await new Promise((r) => setTimeout(r, 100)); continue; }
    if (c.loaded && (!c.hasMore || (c.oldest && c.oldest <= seq))) break;
    await loadHistory(id);
    if (S.open !== id) return;
  }
  render();
}

// ---------------------------------------------------------------- mute

/** @param {number | null} forMs null: until unmuted */
async function mute(forMs) {
  const id = S.open;
  if (id === null) return;
  closeMuteMenu();
  try {
    const r = await api.put(`/api/conversations/${id}/mute`, { until: forMs === null ? null : Date.now() + forMs });
    const chat = S.chats.get(id);
    if (chat) { chat.muted = true; chat.muted_until = r && r.muted_until !== undefined ? r.muted_until : null; }
    render();
    reloadChatsSoon();
  } catch (e) {
    toast(`Could not mute: ${e instanceof Error ? e.message : 'failed'}`);
  }
}

async function unmute() {
  const id = S.open;
  if (id === null) return;
  try {
    await api.del(`/api/conversations/${id}/mute`);
    const chat = S.chats.get(id);
    if (chat) { chat.muted = false; chat.muted_until = null; }
    render();
    reloadChatsSoon();
  } catch (e) {
    toast(`Could not unmute: ${e instanceof Error ? e.message : 'failed'}`);
  }
}

function openMuteMenu() {
  $('mute-menu').hidden = false;
  $('mute-btn').setAttribute('aria-expanded', 'true');
  const first = $('mute-menu').querySelector('button');
  if (first) first.focus();
}

/** @param {boolean} [refocus] */
function closeMuteMenu(refocus) {
  if ($('mute-menu').hidden) return;
  $('mute-menu').hidden = true;
  $('mute-btn').setAttribute('aria-expanded', 'false');
  if (refocus) $('mute-btn').focus();
}

// ---------------------------------------------------------------- toast

let toastTimer = 0;
/** A short message for the user (errors of background requests). @param {string} text */
function toast(text) {
  const el = $('toast');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = window.setTimeout(() => { el.hidden = true; }, 6000);
}

/** @param {number} id */
function openConv(id) {
  if (S.open !== id) {
    if (S.compose && S.compose.mode === 'edit') $('composer-input').value = '';
    S.compose = null;
    S.picker = null;
    closeMuteMenu();
  }
  S.open = id;
  history.replaceState(null, '', `#c=${id}`);
  const c = conv(id);
  c.stickBottom = true;
  if (!c.loaded) loadHistory(id);
  loadMeta(id);
  render();
  requestAnimationFrame(() => $('composer-input').focus());
}

function closeConv() {
  if (S.compose && S.compose.mode === 'edit') $('composer-input').value = '';
  S.compose = null;
  S.picker = null;
  closeMuteMenu();
  S.open = null;
  history.replaceState(null, '', location.pathname);
  render();
}

/** @param {number} seq */
async function showStatus(seq) {
  if (S.open === null) return;
  const list = $('status-list');
  list.replaceChildren(h('li', null, 'Loading…'));
  $('status-dialog').showModal();
  try {
    const { members } = await api.get(`/api/conversations/${S.open}/messages/${seq}/status`);
    list.replaceChildren(...members.map((/** @type {any} */ m) => h('li', { 'data-user': m.user_id, 'data-status': m.status },
      h('span', null, userName(m.user_id)), h('span', { class: 'tick', 'data-status': m.status }, m.status))));
  } catch (e) {
    list.replaceChildren(h('li', { class: 'error' }, e instanceof Error ? e.message : 'failed'));
  }
}

// ---------------------------------------------------------------- groups

/** @type {{id: number | null, add: number[]}} */
const G = { id: null, add: [] };

/** Opens the group dialog: a new group when `id` is null. @param {number | null} id */
async function groupDialog(id) {
  G.id = id;
  G.add = [];
  $('group-error').textContent = '';
  $('group-add').value = '';
  $('group-add-results').replaceChildren();
  const me = S.session ? S.session.user.id : 0;
  if (id === null) {
    $('group-dialog-title').textContent = 'New group';
    $('group-name').value = '';
    $('group-desc').value = '';
    $('group-save').textContent = 'Create';
    $('group-leave').hidden = true;
    $('group-delete').hidden = true;
  } else {
    const c = conv(id);
    await loadMeta(id);
    $('group-dialog-title').textContent = 'Group details';
    $('group-name').value = c.conversation ? c.conversation.name : '';
    $('group-desc').value = c.conversation ? c.conversation.description : '';
    $('group-save').textContent = 'Save';
    $('group-leave').hidden = false;
    const admin = (c.members || []).some((m) => m.user_id === me && m.role === 'admin');
    $('group-delete').hidden = !admin;
  }
  renderGroupMembers();
  if (!$('group-dialog').open) $('group-dialog').showModal();
}

function renderGroupMembers() {
  const me = S.session ? S.session.user.id : 0;
  const items = [];
  if (G.id !== null) {
    const c = conv(G.id);
    const admin = (c.members || []).some((m) => m.user_id === me && m.role === 'admin');
    for (const m of c.members || []) {
      items.push(h('li', { 'data-user': m.user_id },
        h('span', null, `${userName(m.user_id)}${m.role === 'admin' ? ' (admin)' : ''}`),
        admin && m.user_id !== me ? h('button', { type: 'button', class: 'danger', 'aria-label': `Remove ${userName(m.user_id)}`,
          onclick: () => groupAction(() => api.del(`/api/groups/${G.id}/members/${m.user_id}`)) }, 'Remove') : null));
    }
  } else {
    for (const uid of G.add) {
      items.push(h('li', { 'data-user': uid }, h('span', null, userName(uid)),
        h('button', { type: 'button', 'aria-label': `Do not add ${userName(uid)}`, onclick: () => { G.add = G.add.filter((x) => x !== uid); renderGroupMembers(); } }, '✕')));
    }
  }
  $('group-members').replaceChildren(...items);
}

/** Runs a group request, then refreshes the dialog and lists. @param {() => Promise<any>} op */
async function groupAction(op) {
  $('group-error').textContent = '';
  try {
    await op();
    if (G.id !== null) {
      conv(G.id).metaLoaded = false;
      await loadMeta(G.id);
      renderGroupMembers();
    }
    loadChats();
  } catch (e) {
    $('group-error').textContent = e instanceof Error ? e.message : 'failed';
  }
}

// ---------------------------------------------------------------- search

/** @param {string} q @param {(u: any) => void} pick @param {HTMLElement} list */
async function searchUsers(q, pick, list) {
  if (!q.trim()) { list.replaceChildren(); list.hidden = true; return; }
  try {
    const { users } = await api.get(`/api/users?q=${encodeURIComponent(q.trim())}&limit=10`);
    const me = S.session ? S.session.user.id : 0;
    const found = users.filter((/** @type {any} */ u) => u.id !== me);
    for (const u of found) {
      S.names.set(u.id, u.name);
      const p = S.presence.get(u.id);
      S.presence.set(u.id, { online: u.online, last_seen: p ? p.last_seen : null });
    }
    list.replaceChildren(...(found.length ? found.map((/** @type {any} */ u) => h('li', null,
      h('button', { type: 'button', class: 'user-result', 'data-user': u.id, onclick: () => pick(u) },
        h('span', { class: `dot-inline${u.online ? ' online' : ''}` }), u.name, u.online ? h('span', { class: 'muted small' }, ' online') : null)))
      : [h('li', { class: 'muted small' }, 'Nobody by that name')]));
    list.hidden = false;
  } catch { /* offline */ }
}

/**
 * Message search: a new query, or the next page of the current one.
 * @param {string} q @param {boolean} more
 */
async function searchMessages(q, more) {
  const query = q.trim();
  const panel = $('msg-search-panel');
  if (!query) {
    S.search = { q: '', hits: [], cursor: null, loading: false, error: '' };
    panel.hidden = true;
    return;
  }
  if (more && (!S.search.cursor || S.search.loading)) return;
  if (!more) S.search = { q: query, hits: [], cursor: null, loading: true, error: '' };
  S.search.loading = true;
  panel.hidden = false;
  renderSearch();
  const mine = S.search;
  try {
    const cursor = more && mine.cursor ? `&cursor=${encodeURIComponent(mine.cursor)}` : '';
    const res = await api.get(`/api/search?q=${encodeURIComponent(query)}&limit=20${cursor}`);
    if (S.search !== mine) return; // a newer query meanwhile
    mine.hits.push(...res.hits);
    mine.cursor = res.next_cursor || null;
  } catch (e) {
    if (S.search !== mine) return;
    mine.error = e instanceof Error ? e.message : 'failed';
  }
  mine.loading = false;
  renderSearch();
}

function renderSearch() {
  const q = S.search;
  $('msg-search-status').textContent = q.error ? `Search failed: ${q.error}`
    : q.loading && !q.hits.length ? 'Searching…'
    : q.hits.length ? `Messages with “${q.q}”` : `No messages with “${q.q}”`;
  $('msg-search-results').replaceChildren(...q.hits.map((hit) => {
    const chat = S.chats.get(hit.conv_id);
    return searchHit({
      conv_id: hit.conv_id, seq: hit.seq, at: hit.sent_at, sender: userName(hit.sender),
      conv: chat ? chat.name : `Conversation ${hit.conv_id}`,
      fragments: Array.isArray(hit.fragments) && hit.fragments.length ? hit.fragments : [{ text: hit.body || '', match: false }],
    }, () => jumpTo(hit.conv_id, hit.seq));
  }));
  const moreBtn = $('msg-search-more');
  moreBtn.hidden = !q.cursor;
  moreBtn.disabled = q.loading;
  moreBtn.textContent = q.loading && q.hits.length ? 'Loading…' : 'More';
}

function closeSearch() {
  $('msg-search').value = '';
  searchMessages('', false);
}

// ---------------------------------------------------------------- session

async function startApp() {
  if (!S.session) return;
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  $('me-name').textContent = S.session.user.name;
  try {
    for (const item of await outbox.all(S.session.user.id)) {
      const c = conv(item.conv_id);
      if (item.op) c.ops.set(item.client_msg_id, item); else c.pending.set(item.client_msg_id, item);
    }
  } catch { /* no IndexedDB */ }
  const own = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  let known = [];
  try { known = JSON.parse(localStorage.getItem('parley.gateways') || '[]'); } catch { known = []; }
  S.conn = new Connection({
    token: S.session.token, deviceId: S.device, gateways: [own, ...known],
    onFrame, onState: showConn, onOpen, onUnauthorized: () => logout(false),
  });
  S.conn.start();
  await loadChats();
  const m = /^#c=(\d+)$/.exec(location.hash);
  if (m && S.chats.has(Number(m[1]))) openConv(Number(m[1]));
  render();
}

/** @param {boolean} revoke */
async function logout(revoke) {
  if (revoke && S.session) { try { await api.post('/api/logout'); } catch { /* already gone */ } }
  if (S.conn) S.conn.stop();
  S.conn = null;
  api.base = '';
  S.session = null;
  localStorage.removeItem('parley.session');
  S.chats.clear();
  S.convs.clear();
  S.open = null;
  history.replaceState(null, '', location.pathname);
  $('app-view').hidden = true;
  $('conn-state').hidden = true;
  $('login-view').hidden = false;
  $('login-password').value = '';
  $('login-name').focus();
}

/** @param {SubmitEvent} ev */
async function onLogin(ev) {
  ev.preventDefault();
  const submitter = /** @type {HTMLButtonElement | null} */ (ev.submitter);
  const name = $('login-name').value.trim();
  const password = $('login-password').value;
  $('login-error').textContent = '';
  try {
    if (submitter && submitter.value === 'register') await api.post('/api/register', { name, password });
    const res = await api.post('/api/login', { name, password });
    S.session = { token: res.token, user: res.user };
    localStorage.setItem('parley.session', JSON.stringify(S.session));
    await startApp();
  } catch (e) {
    $('login-error').textContent = e instanceof Error ? e.message : 'failed';
  }
}

// ---------------------------------------------------------------- wiring

function wire() {
  $('login-form').addEventListener('submit', onLogin);
  $('logout-btn').addEventListener('click', () => logout(true));
  $('back-btn').addEventListener('click', closeConv);
  $('details-btn').addEventListener('click', () => S.open !== null && groupDialog(S.open));
  $('new-group-btn').addEventListener('click', () => groupDialog(null));
  $('notify-btn').addEventListener('click', async () => {
    $('notify-status').textContent = await notify.enable(api);
  });

  let searchTimer = 0;
  $('user-search').addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = window.setTimeout(() => searchUsers($('user-search').value, async (u) => {
      try {
        const c = await api.post(`/api/direct/${u.id}`);
        $('user-search').value = '';
        $('search-results').hidden = true;
        if (!S.chats.has(c.id)) {
          S.chats.set(c.id, { conv_id: c.id, kind: 'direct', name: u.name, peer: { id: u.id, name: u.name },
            last_message: null, last_activity_at: c.created_at, unread: 0, last_message_status: null });
        }
        openConv(c.id);
        loadChats();
      } catch (e) { $('notify-status').textContent = e instanceof Error ? e.message : 'failed'; }
    }, $('search-results')), 200);
  });
  $('user-search').addEventListener('keydown', (/** @type {KeyboardEvent} */ ev) => {
    if (ev.key === 'ArrowDown') { const b = $('search-results').querySelector('button'); if (b) { ev.preventDefault(); b.focus(); } }
    if (ev.key === 'Escape') { $('user-search').value = ''; $('search-results').hidden = true; }
  });

  const input = $('composer-input');
  $('composer').addEventListener('submit', (/** @type {Event} */ ev) => {
    ev.preventDefault();
    const body = input.value;
    if (!body.trim() || !composerFits()) return;
    const k = S.compose && S.compose.conv === S.open ? S.compose : null;
    S.compose = null;
    input.value = '';
    input.style.height = '';
    if (k && k.mode === 'edit') {
      const m = S.open !== null ? conv(S.open).msgs.get(k.seq) : null;
      if (m && m.body !== body) queueOp('edit', k.seq, { body });
      else render();
    } else {
      sendMessage(body, k ? k.seq : null);
    }
    composerFits();
  });
  input.addEventListener('keydown', (/** @type {KeyboardEvent} */ ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('composer').requestSubmit();
    } else if (ev.key === 'Escape' && S.compose) {
      ev.preventDefault();
      ev.stopPropagation();
      cancelCompose();
    } else if (ev.key === 'ArrowUp' && !input.value && S.open !== null && S.session) {
      // Up in an empty composer edits my last message.
      const me = S.session.user.id;
      const last = [...conv(S.open).msgs.values()].filter((m) => isText(m) && m.sender === me && !m.deleted)
        .sort((a, b) => b.seq - a.seq)[0];
      if (last) { ev.preventDefault(); startEdit(last.seq); }
    }
  });
  $('compose-cancel').addEventListener('click', () => { cancelCompose(); input.focus(); });

  // Mute: a menu of durations, or unmute at once.
  $('mute-btn').addEventListener('click', () => {
    if (S.open === null) return;
    if (isMuted(S.chats.get(S.open))) unmute();
    else if ($('mute-menu').hidden) openMuteMenu();
    else closeMuteMenu(true);
  });
  $('mute-menu').addEventListener('click', (/** @type {MouseEvent} */ ev) => {
    const b = /** @type {HTMLElement | null} */ (/** @type {HTMLElement} */ (ev.target).closest('[data-mute]'));
    if (!b) return;
    const v = b.dataset.mute;
    mute(v === 'forever' ? null : Number(v));
  });
  $('mute-menu').addEventListener('keydown', (/** @type {KeyboardEvent} */ ev) => {
    const items = [...$('mute-menu').querySelectorAll('button')];
    const i = items.indexOf(document.activeElement);
    if (ev.key === 'Escape') { ev.preventDefault(); ev.stopPropagation(); closeMuteMenu(true); }
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      ev.preventDefault();
      items[(i + (ev.key === 'ArrowDown' ? 1 : items.length - 1)) % items.length].focus();
    }
  });
  document.addEventListener('click', (ev) => {
    const t = /** @type {HTMLElement} */ (ev.target);
    if (!$('mute-menu').hidden && !t.closest('#mute-menu') && !t.closest('#mute-btn')) closeMuteMenu();
    if (S.picker && !t.closest('.picker') && !t.closest('[data-key$=":react"]')) { S.picker = null; render(); }
  });

  // Message search.
  let msgSearchTimer = 0;
  $('msg-search').addEventListener('input', () => {
    clearTimeout(msgSearchTimer);
    msgSearchTimer = window.setTimeout(() => searchMessages($('msg-search').value, false), 350);
  });
  $('msg-search-form').addEventListener('submit', (/** @type {Event} */ ev) => {
    ev.preventDefault();
    clearTimeout(msgSearchTimer);
    searchMessages($('msg-search').value, false);
  });
  $('msg-search').addEventListener('keydown', (/** @type {KeyboardEvent} */ ev) => {
    if (ev.key === 'ArrowDown') { const b = $('msg-search-results').querySelector('button'); if (b) { ev.preventDefault(); b.focus(); } }
    if (ev.key === 'Escape') closeSearch();
  });
  $('msg-search-more').addEventListener('click', () => searchMessages(S.search.q, true));
  $('msg-search-close').addEventListener('click', () => { closeSearch(); $('msg-search').focus(); });
  input.addEventListener('input', () => {
    input.style.height = '';
    input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
    composerFits();
    if (S.open === null || !S.conn) return;
    const c = conv(S.open);
    if (Date.now() - c.lastTyping > TYPING_EVERY_MS && input.value) {
      if (S.conn.send({ type: 'typing', conv_id: S.open })) c.lastTyping = Date.now();
    }
  });

  $('messages').addEventListener('focusin', onTimelineFocusIn);
  $('messages').addEventListener('focusout', onTimelineFocusOut);
  $('messages').addEventListener('keydown', onTimelineKey);
  $('messages').addEventListener('scroll', () => {
    if (S.open === null) return;
    const c = conv(S.open);
    if ($('messages').scrollTop < 120 && c.loaded && c.hasMore && !c.loading) loadHistory(S.open);
  });

  // Keyboard: Alt+Up / Alt+Down move between chats, Escape leaves one.
  document.addEventListener('keydown', (ev) => {
    if (!S.session) return;
    if (ev.altKey && (ev.key === 'ArrowUp' || ev.key === 'ArrowDown')) {
      const ids = [...$('chat-list').querySelectorAll('[data-conv]')].map((b) => Number(b.dataset.conv));
      if (!ids.length) return;
      const i = S.open === null ? -1 : ids.indexOf(S.open);
      const next = ids[Math.max(0, Math.min(ids.length - 1, i + (ev.key === 'ArrowUp' ? -1 : 1)))];
      ev.preventDefault();
      openConv(next);
    } else if (ev.key === 'Escape' && !document.querySelector('dialog[open]') && S.open !== null && document.activeElement === input) {
      closeConv();
    }
  });

  // Group dialog.
  let addTimer = 0;
  $('group-add').addEventListener('input', () => {
    clearTimeout(addTimer);
    addTimer = window.setTimeout(() => searchUsers($('group-add').value, (u) => {
      $('group-add').value = '';
      $('group-add-results').replaceChildren();
      if (G.id === null) {
        if (!G.add.includes(u.id)) G.add.push(u.id);
        renderGroupMembers();
      } else {
        groupAction(() => api.post(`/api/groups/${G.id}/members`, { user_id: u.id }));
      }
    }, $('group-add-results')), 200);
  });
  $('group-save').addEventListener('click', () => {
    const name = $('group-name').value.trim();
    const description = $('group-desc').value;
    if (G.id === null) {
      groupAction(async () => {
        const g = await api.post('/api/groups', { name, description, members: G.add });
        $('group-dialog').close();
        S.chats.set(g.id, { conv_id: g.id, kind: 'group', name: g.name, peer: null, last_message: null,
          last_activity_at: g.created_at, unread: 0, last_message_status: null });
        openConv(g.id);
      });
    } else {
      const id = G.id;
      groupAction(async () => {
        await api.patch(`/api/groups/${id}`, { name, description });
        const chat = S.chats.get(id);
        if (chat) chat.name = name;
        $('group-dialog').close();
        render();
      });
    }
  });
  $('group-leave').addEventListener('click', () => {
    const id = G.id;
    if (id === null || !confirm('Leave this group?')) return;
    groupAction(async () => {
      await api.post(`/api/groups/${id}/leave`);
      G.id = null;
      $('group-dialog').close();
      S.chats.delete(id);
      closeConv();
    });
  });
  $('group-delete').addEventListener('click', () => {
    const id = G.id;
    if (id === null || !confirm('Delete this group for everyone?')) return;
    groupAction(async () => {
      await api.del(`/api/groups/${id}`);
      G.id = null;
      $('group-dialog').close();
      S.chats.delete(id);
      closeConv();
    });
  });

  document.addEventListener('visibilitychange', () => { ackSeen(); if (S.conn) S.conn.retryNow(); });
  window.addEventListener('online', () => S.conn && S.conn.retryNow());
  // Leaving the page (or entering the back/forward cache) ends the session
  // at once, so the others see us offline; coming back reconnects.
  window.addEventListener('pagehide', () => S.conn && S.conn.suspend());
  window.addEventListener('pageshow', (ev) => { if (ev.persisted && S.conn) S.conn.start(); });
}

wire();
try {
  const saved = JSON.parse(localStorage.getItem('parley.session') || 'null');
  if (saved && saved.token && saved.user) S.session = saved;
} catch { /* corrupt: log in again */ }
if (S.session) startApp(); else logout(false);
