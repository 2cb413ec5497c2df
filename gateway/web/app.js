// @ts-check
// Parley Web: the reference client of docs/PROTOCOL.md and docs/HTTP.md.
//
// State lives here; view.js builds DOM from it, connection.js keeps the
// WebSocket, outbox.js persists unacknowledged sends.

import { Api, ApiError } from './api.js';
import { Connection } from './connection.js';
import { Outbox } from './outbox.js';
import { h, chatRow, timeline } from './view.js';
import { lastSeen } from './format.js';
import * as notify from './notify.js';

const PAGE = 50;
const TYPING_EVERY_MS = 3000;
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

/**
 * @typedef {{msgs: Map<number, any>, pending: Map<string, any>, high: number, oldest: number,
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
  device: deviceId(),
};

const api = new Api(() => (S.session ? S.session.token : null));
api.onUnauthorized = () => logout(false);
const outbox = new Outbox();

/** @param {number} id @returns {Conv} */
function conv(id) {
  let c = S.convs.get(id);
  if (!c) {
    c = {
      msgs: new Map(), pending: new Map(), high: 0, oldest: 0, hasMore: true, loaded: false, loading: false,
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

function renderList() {
  const ul = $('chat-list');
  const me = S.session ? S.session.user.id : 0;
  const chats = [...S.chats.values()].sort((a, b) => (b.last_activity_at || 0) - (a.last_activity_at || 0));
  const rows = chats.map((chat) => {
    const c = S.convs.get(chat.conv_id);
    const pending = c && c.pending.size > 0;
    const lm = chat.last_message;
    let status = null;
    if (pending) status = 'pending';
    else if (lm && lm.sender === me) status = statusOf(chat.conv_id, lm.seq) || chat.last_message_status || 'sent';
    const peer = chat.kind === 'direct' && chat.peer ? S.presence.get(chat.peer.id) : null;
    const waiting = pending ? [.../** @type {Conv} */ (c).pending.values()].pop() : null;
    const last = waiting ? `You: ${waiting.body}`
      : lm ? `${chat.kind === 'group' || lm.sender === me ? `${userName(lm.sender)}: ` : ''}${lm.preview}` : 'No messages yet';
    return chatRow({
      conv_id: chat.conv_id, name: chat.name, online: chat.kind === 'direct' ? !!(peer && peer.online) : null,
      last, time: lm ? lm.sent_at : chat.last_activity_at, status, unread: chat.unread || 0,
      current: S.open === chat.conv_id, typing: typingIn(chat.conv_id).length > 0,
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
    const online = members.filter((m) => m.user_id !== me && S.presence.get(m.user_id)?.online).length;
    sub = members.length ? `${members.length} members${online ? `, ${online} online` : ''}` : '';
  } else if (chat && chat.peer) {
    const p = S.presence.get(chat.peer.id);
    sub = p ? (p.online ? 'online' : lastSeen(p.last_seen)) : '';
  }
  $('conv-sub').textContent = sub;
  const typers = typingIn(id);
  $('typing').textContent = typers.length === 0 ? ''
    : group ? `${typers.map(userName).join(', ')} ${typers.length > 1 ? 'are' : 'is'} typing…` : 'typing…';

  // Timeline: messages in seq order, then pending ones; membership events by time.
  /** @type {any[]} */
  const msgs = [...c.msgs.values()].sort((a, b) => a.seq - b.seq).map((m) => ({
    kind: 'msg', seq: m.seq, cmid: m.client_msg_id, sender: m.sender, body: m.body, at: m.sent_at,
    status: m.sender === me ? statusOf(id, m.seq) || 'sent' : null,
  }));
  for (const p of c.pending.values()) {
    msgs.push({ kind: 'msg', seq: null, cmid: p.client_msg_id, sender: me, body: p.body, at: p.created_at,
      status: p.failed ? 'failed' : 'pending', error: p.failed });
  }
  // Events older than the loaded history wait until it is scrolled to.
  const oldestAt = !c.hasMore || !msgs.length ? 0 : msgs[0].at;
  const events = c.events.filter((e) => e.at >= oldestAt).sort((a, b) => a.at - b.at);
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
  const children = [];
  if (c.hasMore && c.loaded) children.push(h('p', { class: 'older muted' }, c.loading ? 'Loading older messages…' : 'Scroll up for older messages'));
  if (!c.hasMore && c.loaded) children.push(h('p', { class: 'older muted' }, 'Start of the conversation'));
  box.replaceChildren(...children, timeline(items, {
    me, group, name: userName, details: showStatus,
  }));
  box.scrollTop = atBottom || c.stickBottom ? box.scrollHeight : box.scrollHeight - fromBottom;
  c.stickBottom = false;
  ackSeen();
}

/** @param {string} state @param {string} detail */
function showConn(state, detail) {
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
      c.events = [...events.map((ev) => ({ kind: 'event', at: ev.at, text: eventText(ev.action, ev.user_id, ev.by) })), ...live];
    }
    render();
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 403)) { S.chats.delete(id); if (S.open === id) closeConv(); render(); }
  }
}

/** @param {string} action @param {number} user @param {number} by */
function eventText(action, user, by) {
  switch (action) {
    case 'added': return user === by ? `${userName(user)} created the group` : `${userName(by)} added ${userName(user)}`;
    case 'left': return `${userName(user)} left`;
    case 'removed': return `${userName(by)} removed ${userName(user)}`;
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

/** Adds a message, once per (conv_id, seq). Returns whether it was new. @param {any} m */
function addMessage(m) {
  const c = conv(m.conv_id);
  if (c.msgs.has(m.seq)) return false;
  c.msgs.set(m.seq, m);
  if (S.session && m.sender === S.session.user.id && m.client_msg_id && c.pending.has(m.client_msg_id)) {
    c.pending.delete(m.client_msg_id);
    outbox.remove(m.client_msg_id).catch(() => {});
  }
  if (!c.oldest || m.seq < c.oldest) c.oldest = m.seq;
  return true;
}

/** The newest page, on first opening. @param {number} id */
async function loadHistory(id) {
  const c = conv(id);
  if (c.loading) return;
  c.loading = true;
  try {
    const before = c.loaded && c.oldest ? `&before_seq=${c.oldest}` : '';
    const { messages } = await api.get(`/api/conversations/${id}/messages?limit=${PAGE}${before}`);
    for (const m of messages) addMessage(m);
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
      for (const m of messages) addMessage(m);
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
  if (chat && chat.unread && shown >= (chat.last_message ? chat.last_message.seq : 0)) {
    chat.unread = 0;
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
      c.typing.delete(f.sender);
      const chat = S.chats.get(f.conv_id);
      if (!chat) { reloadChatsSoon(); break; }
      if (!chat.last_message || f.seq >= chat.last_message.seq) {
        chat.last_message = { seq: f.seq, sender: f.sender, preview: f.body.slice(0, 100), sent_at: f.sent_at };
        chat.last_activity_at = Math.max(chat.last_activity_at || 0, f.sent_at);
        if (f.sender === me) chat.last_message_status = 'sent';
      }
      if (isNew && f.sender !== me) {
        const visible = S.open === f.conv_id && document.visibilityState === 'visible';
        if (!visible && f.seq > c.ackedSeen) chat.unread = (chat.unread || 0) + 1;
        notify.show(chat.name, f.body, f.conv_id);
      }
      if (!c.metaLoaded && f.sender === me) loadMeta(f.conv_id);
      render();
      break;
    }
    case 'sent': {
      const c = conv(f.conv_id);
      const p = c.pending.get(f.client_msg_id);
      outbox.remove(f.client_msg_id).catch(() => {});
      if (p) {
        c.pending.delete(f.client_msg_id);
        addMessage({ conv_id: f.conv_id, seq: f.seq, sender: me, client_msg_id: f.client_msg_id, body: p.body, sent_at: f.sent_at });
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
      c.events.push({ kind: 'event', at: Date.now(), text: eventText(f.type === 'member_joined' ? 'added' : f.user_id === f.by ? 'left' : 'removed', f.user_id, f.by) });
      if (f.type === 'member_left' && f.user_id === me) {
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
        const p = ref && c.pending.get(ref);
        if (!p) continue;
        if (f.code === 'rate_limited' || f.code === 'unavailable' || f.code === 'internal') {
          setTimeout(() => sendPending(p), f.retry_after_ms || 1000);
        } else {
          p.failed = f.message || f.code;
          outbox.remove(p.client_msg_id).catch(() => {});
        }
      }
      render();
      break;
    }
    default:
      break;
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
  S.conn.send({ type: 'send', conv_id: p.conv_id, client_msg_id: p.client_msg_id, body: p.body });
}

// ---------------------------------------------------------------- actions

let counter = 0;
/** @param {string} body */
async function sendMessage(body) {
  if (S.open === null || !S.session) return;
  const item = {
    client_msg_id: `${S.device.slice(-12)}-${Date.now().toString(36)}-${(counter++).toString(36)}`,
    user_id: S.session.user.id, conv_id: S.open, body, created_at: Date.now(),
  };
  const c = conv(S.open);
  c.pending.set(item.client_msg_id, item);
  c.stickBottom = true;
  render();
  try { await outbox.put(item); } catch { /* private mode: memory only */ }
  sendPending(item);
}

/** @param {number} id */
function openConv(id) {
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

// ---------------------------------------------------------------- session

async function startApp() {
  if (!S.session) return;
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  $('me-name').textContent = S.session.user.name;
  try {
    for (const item of await outbox.all(S.session.user.id)) conv(item.conv_id).pending.set(item.client_msg_id, item);
  } catch { /* no IndexedDB */ }
  const own = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  let known = [];
  try { known = JSON.parse(localStorage.getItem('parley.gateways') || '[]'); } catch { known = []; }
  S.conn = new Connection({
    token: S.session.token, deviceId: S.device, gateways: [own, ...known],
    onFrame, onState: showConn, onOpen,
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
    if (!body.trim()) return;
    input.value = '';
    input.style.height = '';
    sendMessage(body);
  });
  input.addEventListener('keydown', (/** @type {KeyboardEvent} */ ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('composer').requestSubmit();
    }
  });
  input.addEventListener('input', () => {
    input.style.height = '';
    input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
    if (S.open === null || !S.conn) return;
    const c = conv(S.open);
    if (Date.now() - c.lastTyping > TYPING_EVERY_MS && input.value) {
      if (S.conn.send({ type: 'typing', conv_id: S.open })) c.lastTyping = Date.now();
    }
  });

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
