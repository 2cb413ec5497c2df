// @ts-check
// The WebSocket to the cluster (docs/PROTOCOL.md): one at a time, to the
// page's own node first, to the cluster's other gateways when it fails,
// with jittered exponential backoff and a client-side heartbeat that
// notices a node that stopped answering.

const PING_EVERY_MS = 15000;
const PONG_WITHIN_MS = 8000;
const BACKOFF_MIN_MS = 300;
const BACKOFF_MAX_MS = 10000;

/** @typedef {'connecting' | 'syncing' | 'online' | 'offline'} ConnState */

export class Connection {
  /**
   * @param {{token: string, deviceId: string, gateways: string[],
   *          onFrame: (f: any) => void, onState: (s: ConnState, detail: string) => void,
   *          onOpen: () => void, onUnauthorized?: () => void}} opts
   */
  constructor(opts) {
    this.opts = opts;
    /** Every gateway's WebSocket URL, the page's own first. */
    this.gateways = [...new Set(opts.gateways)];
    this.index = 0;
    this.failures = 0;
    /** @type {WebSocket | null} */
    this.ws = null;
    this.stopped = false;
    /** @type {ConnState} */
    this.state = 'offline';
    this.timer = 0;
    this.pingTimer = 0;
    this.pongTimer = 0;
    this.node = '';
    /** The WebSocket URL of the current (or last) connection. */
    this.current = '';
  }

  /** @param {string[]} urls */
  setGateways(urls) {
    const current = this.gateways[this.index];
    this.gateways = [...new Set([...urls, ...this.gateways])];
    this.index = Math.max(0, this.gateways.indexOf(current));
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.stopHeartbeat();
    if (this.ws) this.ws.close(1000, 'logout');
    this.ws = null;
    this.setState('offline', '');
  }

  /** Sends a frame if the socket is open. @param {object} frame @returns {boolean} */
  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.state === 'connecting') return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Closes the socket without reconnecting (the page is going away). */
  suspend() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.stopHeartbeat();
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, 'page hidden');
  }

  /** @param {ConnState} state @param {string} detail */
  setState(state, detail) {
    this.state = state;
    this.opts.onState(state, detail);
  }

  /** Reconnects now (a network change, the user asking). */
  retryNow() {
    if (this.stopped || (this.ws && this.ws.readyState <= WebSocket.OPEN)) return;
    clearTimeout(this.timer);
    this.connect();
  }

  connect() {
    if (this.stopped) return;
    const base = this.gateways[this.index % this.gateways.length];
    this.current = base;
    // The token goes in the first frame, not the URL: a URL is printed in
    // the console's errors on every failed connect, and lands in logs.
    const url = base;
    this.setState('connecting', base.replace(/^wss?:\/\//, '').replace(/\/ws$/, ''));
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      this.onAlive();
      if (frame.type === 'hello') {
        this.failures = 0;
        this.node = frame.node || '';
        this.setState('syncing', this.node);
        this.opts.onOpen();
      } else if (frame.type === 'synced') {
        this.setState('online', this.node);
      } else if (frame.type === 'pong') {
        return;
      } else if (frame.type === 'error' && frame.ref === 'auth' && frame.code === 'unauthorized') {
        // The token is no longer valid (logged out elsewhere, expired).
        this.stop();
        if (this.opts.onUnauthorized) this.opts.onUnauthorized();
        return;
      }
      this.opts.onFrame(frame);
    };
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: 'auth', token: this.opts.token, device_id: this.opts.deviceId }));
      this.startHeartbeat();
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.stopHeartbeat();
      // 4001: this user opened more connections on that node than it
      // allows and this was the oldest. Coming back at once would close
      // another of the user's own, so wait as long as the backoff allows.
      if (ev.code === 4001) this.failures = Math.max(this.failures, 10);
      // Whatever the reason (a killed node, 1012 shutdown, the network),
      // the next attempt goes to the next gateway.
      this.index = (this.index + 1) % this.gateways.length;
      this.scheduleRetry();
    };
  }

  scheduleRetry() {
    if (this.stopped) return;
    this.failures += 1;
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(this.failures, 10));
    // The first retry is quick; after that, full jitter so a cluster's
    // clients do not all come back at the same instant.
    const delay = this.failures === 1 ? Math.random() * BACKOFF_MIN_MS : Math.random() * cap;
    this.setState('offline', `reconnecting in ${Math.ceil(delay / 1000)} s`);
    this.timer = window.setTimeout(() => this.connect(), delay);
  }

  startHeartbeat() {
    this.stopHeartbeat();
    this.pingTimer = window.setInterval(() => {
      if (!this.send({ type: 'ping' })) return;
      clearTimeout(this.pongTimer);
      // No frame at all within the window: the node is gone without a
      // close (hung, partitioned). Drop it and fail over.
      this.pongTimer = window.setTimeout(() => this.ws && this.ws.close(4000, 'no pong'), PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  onAlive() {
    clearTimeout(this.pongTimer);
  }

  stopHeartbeat() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }
}
