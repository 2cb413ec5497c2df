// @ts-check
// The HTTP API (docs/HTTP.md), always on the page's own origin.

/** An error answered by the API: `{"error": {"code", "message"}}`. */
export class ApiError extends Error {
  /** @param {number} status @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  /** @param {() => string | null} token */
  constructor(token) {
    this.token = token;
    /** The node the API calls go to: '' for the page's own, else the
     * origin of the gateway the WebSocket is connected to (after a
     * failover the page's own node may be gone). */
    this.base = '';
    /** Called on any 401 with a token: the session is gone. */
    this.onUnauthorized = () => {};
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @returns {Promise<any>}
   */
  async call(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = {};
    const token = this.token();
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await fetch(this.base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError(0, 'network', 'The server cannot be reached.');
    }
    if (res.status === 204) return null;
    let data = null;
    try { data = await res.json(); } catch { /* empty or not JSON */ }
    if (!res.ok) {
      if (res.status === 401 && token) this.onUnauthorized();
      const err = data && data.error ? data.error : { code: 'http', message: `HTTP ${res.status}` };
      throw new ApiError(res.status, err.code, err.message);
    }
    return data;
  }

  get(path) { return this.call('GET', path); }
  post(path, body) { return this.call('POST', path, body); }
  patch(path, body) { return this.call('PATCH', path, body); }
  put(path, body) { return this.call('PUT', path, body); }
  del(path) { return this.call('DELETE', path); }
}
